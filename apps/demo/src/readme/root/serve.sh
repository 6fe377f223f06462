# Ctrl-C (or SIGTERM) lets requests in flight finish, stops the Python server and exits 0
wsgiproxy serve --config wsgiproxy.config.json
