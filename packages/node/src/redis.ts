/** @module @wsgiproxy/node/redis: a replay store on Redis that the replicas of a backend share (needs the `redis` package). */
export type {
  RedisReplayClient,
  RedisReplayStoreOptions,
  RedisReplayStoreWarning,
} from './lib/redis/redis-replay-store.ts'
export { RedisReplayStore } from './lib/redis/redis-replay-store.ts'
