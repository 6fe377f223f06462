import { toEnviron, toRequest } from '@wsgiproxy/core'

const environ = toEnviron(new Request('https://example.com/api/a%2Fb?x=1'), { scriptName: '/api' })
console.log(environ.SCRIPT_NAME) // '/api'
console.log(environ.PATH_INFO) // '/a/b' (decoded; the raw path is kept so %2F survives)
console.log(toRequest(environ).url) // 'https://example.com/api/a%2Fb?x=1'
