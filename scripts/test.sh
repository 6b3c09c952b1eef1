#!/usr/bin/env bash
# The test command (`npm test`): installs what the tests need that npm cannot (PostgreSQL,
# git-lfs, nginx, Redis and the OpenSSH client, from Debian's packages, when missing and we are root), builds, starts a throwaway
# PostgreSQL cluster and Redis server, runs every test file with node's test runner, and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v git >/dev/null || need_apt+=(git)
command -v git-lfs >/dev/null || need_apt+=(git-lfs)
# nginx: the front proxy of the pack cache's hand-off test (test/e2e/pack-cache-handoff.test.ts).
PATH="$PATH:/usr/sbin" command -v nginx >/dev/null || need_apt+=(nginx-light)
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
[ -n "$pg_bin" ] && [ -x "$pg_bin/initdb" ] || need_apt+=(postgresql)
# Redis: the shared rate-limit budget of several frontends (src/http/rate-limit.ts).
command -v redis-server >/dev/null || need_apt+=(redis-server)
# The OpenSSH client (ssh, ssh-keygen, ssh-keyscan): git over SSH (test/e2e/ssh.test.ts).
command -v ssh-keyscan >/dev/null || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test: installing ${need_apt[*]} from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
  else
    echo "test: missing ${need_apt[*]}; install them (sudo apt-get install ${need_apt[*]}) and run again" >&2
    exit 1
  fi
fi

# moto's S3 server (buckets with versioning): the S3 store's contract tests (src/storage/s3-store.test.ts).
# These machines' Python carries it; else Debian's, installed when we are root.
if ! python3 -c 'import moto.server' 2>/dev/null; then
  if ! /usr/bin/python3 -c 'import moto.server' 2>/dev/null && [ "$(id -u)" = 0 ]; then
    echo "test: installing python3-moto from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-moto python3-flask python3-flask-cors >/dev/null
  fi
  if /usr/bin/python3 -c 'import moto.server' 2>/dev/null; then
    export GITSTRATUM_TEST_PYTHON=/usr/bin/python3
  else
    echo "test: missing Python's moto server; install it (pip install 'moto[server]') and run again" >&2
    exit 1
  fi
fi

npm run --silent build

# A throwaway PostgreSQL cluster on a free port, trusting local connections.
pg_dir=$(mktemp -d /tmp/gitstratum-pg.XXXXXX)
pg_port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
as_pg=()
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  chown postgres "$pg_dir"
  as_pg=(runuser -u postgres --)
fi
redis_pid=""
cleanup() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT
"${as_pg[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
  -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
export GITSTRATUM_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "test: PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $pg_port"

# A throwaway Redis on a free port: no persistence, loopback only.
redis_port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$pg_dir" --daemonize no >"$pg_dir/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done
redis-cli -p "$redis_port" ping >/dev/null || { echo "test: redis-server did not start" >&2; cat "$pg_dir/redis.log" >&2; exit 1; }
export GITSTRATUM_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
echo "test: Redis $(redis-server --version | awk '{print $3}' | sed 's/v=//') on port $redis_port"

mapfile -t files < <(find dist/src dist/test -name '*.test.js' | sort)
if [ $# -gt 0 ]; then files=("$@"); fi
# A test that hangs fails after 5 minutes instead of holding CI to its limit.
node --enable-source-maps --test --test-concurrency="${TEST_CONCURRENCY:-2}" --test-timeout=300000 --test-reporter=spec "${files[@]}"
