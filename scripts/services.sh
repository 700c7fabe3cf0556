#!/usr/bin/env bash
# scripts/services.sh - local services for ckflow's Docker integration tests.
#
#   scripts/services.sh [start]   install what is missing, start dockerd and two
#                                 registries, build/push the base image, write env
#   scripts/services.sh status    show what is running (no changes)
#   scripts/services.sh stop      stop what THIS script started (pid files)
#   scripts/services.sh selftest  re-run the container sandbox-option probe
#   scripts/services.sh env       print the env file (source it in your shell)
#
# Idempotent: a second `start` only checks that everything answers (well under
# a second). Safe to call concurrently (flock). See docs/dev-services.md.
#
# Environment knobs (all optional):
#   CKFLOW_SERVICES_DIR          state dir (default /tmp/ckflow-services)
#   CKFLOW_DOCKER_SOCK           engine socket (default /var/run/docker.sock)
#   CKFLOW_DOCKERD_FLAGS         extra dockerd flags; when set, ONLY this flag set is
#                                tried (e.g. "--storage-driver=vfs --iptables=false")
#   CKFLOW_REGISTRY_PORT         plain registry port (default 5000)
#   CKFLOW_AUTH_REGISTRY_PORT    htpasswd registry port (default 5001)
#   CKFLOW_SERVICES_NO_INSTALL=1 never run apt-get (fail instead)

set -euo pipefail

# ---------------------------------------------------------------- settings --
STATE_DIR=${CKFLOW_SERVICES_DIR:-/tmp/ckflow-services}
DOCKER_SOCK=${CKFLOW_DOCKER_SOCK:-/var/run/docker.sock}
REG_PORT=${CKFLOW_REGISTRY_PORT:-5000}
AUTH_REG_PORT=${CKFLOW_AUTH_REGISTRY_PORT:-5001}
REG_USER=ckflow
REG_PASSWORD=ckflow-secret            # test-only credential, not a secret
BASE_IMAGE=ckflow-base:1
BASE_REPO=ckflow-base
BASE_TAG=1
DOCKERD_WAIT=${CKFLOW_DOCKERD_WAIT:-60}

# dockerd flag sets tried in order, first one that comes up and runs containers wins.
DOCKERD_FLAGSETS=(
  "--storage-driver=overlay2"
  "--storage-driver=overlay2 --iptables=false --ip-masq=false --bridge=none"
  "--storage-driver=vfs"
  "--storage-driver=vfs --iptables=false --ip-masq=false --bridge=none"
)

export DOCKER_HOST="unix://${DOCKER_SOCK}"
export DEBIAN_FRONTEND=noninteractive

# ------------------------------------------------------------------ helpers --
log()  { printf '[services] %s\n' "$*" >&2; }
warn() { printf '[services] WARNING: %s\n' "$*" >&2; }
die()  { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# run a command as root (sudo when needed; non-interactive sudo in CI)
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then sudo -n "$@"; else sudo "$@"; fi
  else die "need root for: $*"; fi
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# pid from a pid file if that process is alive and its cmdline contains $2
live_pid() {
  local f=$1 pat=$2 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat" || return 1
  echo "$pid"
}

engine_up() {
  [ -S "$DOCKER_SOCK" ] || return 1
  [ "$(curl -s -m 3 --unix-socket "$DOCKER_SOCK" http://localhost/_ping 2>/dev/null || true)" = "OK" ]
}

# HTTP status of GET /v2/ on a registry port ("000" = nothing answers)
reg_code() {
  local port=$1; shift
  curl -s -o /dev/null -m 3 -w '%{http_code}' "$@" "http://127.0.0.1:${port}/v2/" 2>/dev/null || true
}

tail_log() { [ -f "$1" ] && { log "--- last lines of $1:"; tail -n "${2:-25}" "$1" >&2; } || true; }

since() { echo $(( $(date +%s) - $1 ))s; }

# ----------------------------------------------------------- 1. packages --
ensure_packages() {
  local missing=()
  if ! command -v docker >/dev/null 2>&1 || { ! command -v dockerd >/dev/null 2>&1 && ! engine_up; }; then
    missing+=(docker.io)
  fi
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  pkg_installed busybox-static || missing+=(busybox-static)
  command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # AppArmor enabled in the kernel but no parser => every `docker run` fails.
  if [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null || true)" = "Y" ] \
     && ! command -v apparmor_parser >/dev/null 2>&1; then
    missing+=(apparmor)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "${CKFLOW_SERVICES_NO_INSTALL:-}" = "1" ] && die "missing packages: ${missing[*]} (CKFLOW_SERVICES_NO_INSTALL=1)"
  log "installing: ${missing[*]}"
  # Keep package maintainer scripts from starting the stock docker / docker-registry
  # services (the stock registry would grab :5000 with a config we do not want).
  local policy=/usr/sbin/policy-rc.d added_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    added_policy=1
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
  if [ $rc -eq 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >&2 || rc=$?
  fi
  [ $added_policy -eq 1 ] && as_root rm -f "$policy"
  [ $rc -eq 0 ] || die "apt-get failed (rc=$rc) installing ${missing[*]}"
}

# ------------------------------------------------------------- 2. dockerd --
DOCKERD_STARTED=0

stop_our_dockerd() {
  local pid
  pid=$(live_pid "$STATE_DIR/dockerd.pid" dockerd) || { rm -f "$STATE_DIR/dockerd.pid"; return 0; }
  log "stopping dockerd (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local _
  for _ in $(seq 1 60); do [ -d "/proc/$pid" ] || break; sleep 0.5; done
  if [ -d "/proc/$pid" ]; then warn "dockerd $pid did not exit, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 1; fi
  rm -f "$STATE_DIR/dockerd.pid"
}

# start dockerd with one flag set; 0 = answering, 1 = died (try next), 2 = hung
start_dockerd_with() {
  local flags=$1 logf="$STATE_DIR/dockerd.log" pid t0
  is_root || die "dockerd is not running on $DOCKER_SOCK and starting it needs root (run as root, or start Docker yourself)"
  command -v dockerd >/dev/null 2>&1 || die "dockerd not found"
  mkdir -p "$(dirname "$DOCKER_SOCK")"
  log "starting dockerd $flags (log: $logf)"
  {
    echo "===== $(date -u +%FT%TZ) dockerd -H unix://$DOCKER_SOCK $flags"
  } >>"$logf"
  # setsid: own session, so Ctrl-C in the caller's terminal / job does not kill it
  # shellcheck disable=SC2086
  # 9>&- : do not hand our flock fd to the daemon (it would hold the lock forever)
  setsid nohup dockerd -H "unix://$DOCKER_SOCK" $flags </dev/null >>"$logf" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$STATE_DIR/dockerd.pid"
  t0=$(date +%s)
  while :; do
    if engine_up; then
      # setsid may have forked: fall back to dockerd's own pid file
      if ! live_pid "$STATE_DIR/dockerd.pid" dockerd >/dev/null && [ -s /var/run/docker.pid ]; then
        pid=$(cat /var/run/docker.pid); echo "$pid" >"$STATE_DIR/dockerd.pid"
      fi
      DOCKERD_STARTED=1
      echo "$flags" >"$STATE_DIR/dockerd.flags"
      log "dockerd up after $(since "$t0") (pid $pid)"
      return 0
    fi
    if [ ! -d "/proc/$pid" ]; then
      warn "dockerd exited during start-up with flags: $flags"
      tail_log "$logf" 12
      rm -f "$STATE_DIR/dockerd.pid"
      return 1
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$DOCKERD_WAIT" ]; then
      warn "dockerd (pid $pid) did not answer on $DOCKER_SOCK within ${DOCKERD_WAIT}s"
      tail_log "$logf" 25
      return 2
    fi
    sleep 0.5
  done
}

# the flag sets to try, in order (the last one that worked goes first)
flagsets_to_try() {
  if [ -n "${CKFLOW_DOCKERD_FLAGS:-}" ]; then
    printf '%s\n' "$CKFLOW_DOCKERD_FLAGS"; return
  fi
  local prev=""
  [ -s "$STATE_DIR/dockerd.flags" ] && prev=$(cat "$STATE_DIR/dockerd.flags")
  [ -n "$prev" ] && printf '%s\n' "$prev"
  local f
  for f in "${DOCKERD_FLAGSETS[@]}"; do [ "$f" = "$prev" ] || printf '%s\n' "$f"; done
}

# --------------------------------------------------------- 3. registries --
write_registry_config() {
  local name=$1 port=$2 auth=$3 dir="$STATE_DIR/$1"
  mkdir -p "$dir/data"
  local secret
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  {
    cat <<EOF
# generated by scripts/services.sh - test-only registry, do not expose
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: ckflow-${name}
storage:
  filesystem:
    rootdirectory: ${dir}/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:${port}
  secret: ${secret}
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [ "$auth" = 1 ]; then
      cat <<EOF
auth:
  htpasswd:
    realm: ckflow-test-registry
    path: ${dir}/htpasswd
EOF
    fi
  } >"$dir/config.yml"
  if [ "$auth" = 1 ]; then
    htpasswd -Bbn "$REG_USER" "$REG_PASSWORD" | sed '/^$/d' >"$dir/htpasswd"
    chmod 600 "$dir/htpasswd"
  fi
}

declare -A REG_STATE=()

# ensure_registry NAME PORT AUTH(0/1) -> who runs it in REG_STATE[NAME]
ensure_registry() {
  local name=$1 port=$2 auth=$3 dir="$STATE_DIR/$1" want code pid
  if [ "$auth" = 1 ]; then want=401; else want=200; fi
  code=$(reg_code "$port")
  if [ "$code" = "000" ]; then
    command -v docker-registry >/dev/null 2>&1 || die "docker-registry binary not found"
    write_registry_config "$name" "$port" "$auth"
    log "starting registry $name on 127.0.0.1:$port (log: $dir/registry.log)"
    setsid nohup docker-registry serve "$dir/config.yml" </dev/null >>"$dir/registry.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$dir/registry.pid"
    local _
    for _ in $(seq 1 40); do
      code=$(reg_code "$port")
      [ "$code" != "000" ] && break
      [ -d "/proc/$pid" ] || { tail_log "$dir/registry.log"; die "registry $name exited at start-up"; }
      sleep 0.25
    done
  fi
  [ "$code" = "$want" ] || { tail_log "$dir/registry.log"; die "127.0.0.1:$port answers /v2/ with HTTP $code, expected $want - another registry holds the port? (stop it or set CKFLOW_*REGISTRY_PORT)"; }
  if [ "$auth" = 1 ]; then
    code=$(reg_code "$port" -u "$REG_USER:$REG_PASSWORD")
    [ "$code" = 200 ] || die "127.0.0.1:$port rejects $REG_USER's test credentials (HTTP $code) - not our registry?"
  fi
  local who="external"
  pid=$(live_pid "$dir/registry.pid" docker-registry) && who="pid $pid"
  REG_STATE[$name]=$who
}

# ---------------------------------------------------------- 4. base image --
busybox_path() {
  local p
  p=$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1 || true)
  [ -n "$p" ] && [ -x "$p" ] || p=/bin/busybox
  [ -x "$p" ] || die "busybox-static binary not found"
  # must be static: it will run in an image without libc
  if ldd "$p" >/dev/null 2>&1; then die "$p is dynamically linked; install busybox-static"; fi
  echo "$p"
}

BASE_CREATED=0
ensure_base_image() {
  if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then return 0; fi
  local bb root="$STATE_DIR/base-rootfs" t0
  t0=$(date +%s)
  bb=$(busybox_path)
  log "building $BASE_IMAGE from $bb"
  rm -rf "$root"
  mkdir -p "$root"/{bin,etc,tmp,var/tmp,root,home/app,usr/bin,sbin,proc,sys,dev,run,work}
  cp "$bb" "$root/bin/busybox"
  chmod 755 "$root/bin/busybox"
  local a
  for a in $("$bb" --list); do
    [ "$a" = busybox ] && continue
    ln -sf busybox "$root/bin/$a"
  done
  ln -sf ../../bin/busybox "$root/usr/bin/env"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
app:x:1000:
nogroup:x:65534:
EOF
  : >"$root/etc/hosts"; : >"$root/etc/resolv.conf"; echo ckflow-base >"$root/etc/hostname"
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 700 "$root/root"
  chmod 1777 "$root/work"
  if is_root; then chown 1000:1000 "$root/home/app"; else chmod 777 "$root/home/app"; fi
  tar --numeric-owner -C "$root" -cf - . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    --change 'LABEL org.opencontainers.image.title=ckflow-base org.opencontainers.image.description=ckflow-test-base-busybox-static' \
    --message "ckflow test base image (busybox-static)" - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
  BASE_CREATED=1
  log "built $BASE_IMAGE in $(since "$t0")"
}

manifest_code() {  # PORT [curl args] -> HTTP code of HEAD manifest
  local port=$1; shift
  curl -s -o /dev/null -m 5 -I -w '%{http_code}' "$@" \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://127.0.0.1:${port}/v2/${BASE_REPO}/manifests/${BASE_TAG}" 2>/dev/null || true
}

# push via the Engine API with X-Registry-Auth, so no `docker login` state is touched
engine_push() {  # REF(host:port/repo) TAG [USER PASSWORD]
  local ref=$1 tag=$2 hdr=() out
  if [ $# -ge 4 ]; then
    local auth
    auth=$(printf '{"username":"%s","password":"%s","serveraddress":"%s"}' "$3" "$4" "${ref%%/*}" | base64 -w0 | tr '+/' '-_')
    hdr=(-H "X-Registry-Auth: $auth")
  else
    hdr=(-H "X-Registry-Auth: e30=")   # "{}"
  fi
  out=$(curl -s -m 300 --unix-socket "$DOCKER_SOCK" -X POST "${hdr[@]}" \
        "http://localhost/images/${ref}/push?tag=${tag}") || return 1
  if grep -q '"error"' <<<"$out"; then log "push $ref:$tag failed: $(grep -o '"error":"[^"]*"' <<<"$out" | head -n1)"; return 1; fi
}

ensure_base_pushed() {  # PORT AUTH(0/1)
  local port=$1 auth=$2 cred=() ref="127.0.0.1:$1/${BASE_REPO}"
  [ "$auth" = 1 ] && cred=(-u "$REG_USER:$REG_PASSWORD")
  [ "$(manifest_code "$port" "${cred[@]}")" = 200 ] && return 0
  log "pushing $BASE_IMAGE to $ref:$BASE_TAG"
  docker tag "$BASE_IMAGE" "$ref:$BASE_TAG"
  local rc=0
  if [ "$auth" = 1 ]; then engine_push "$ref" "$BASE_TAG" "$REG_USER" "$REG_PASSWORD" || rc=$?
  else engine_push "$ref" "$BASE_TAG" || rc=$?; fi
  docker rmi "$ref:$BASE_TAG" >/dev/null 2>&1 || true   # keep only ckflow-base:1 locally
  [ $rc -eq 0 ] && [ "$(manifest_code "$port" "${cred[@]}")" = 200 ] || die "push of $BASE_IMAGE to $ref failed"
}

# ------------------------------------------------- sandbox option probing --
# name|docker run options|shell check run inside the container (must print OK)
PROBES=(
  "run|--rm|echo OK"
  "network-none|--network none|[ \"\$(ls /sys/class/net)\" = lo ] && echo OK"
  "read-only|--read-only|touch /probe 2>/dev/null || echo OK"
  "cap-drop|--cap-drop ALL|grep -q '^CapEff:.*0000000000000000' /proc/self/status && echo OK"
  "no-new-privileges|--security-opt no-new-privileges|grep -q '^NoNewPrivs:.*1' /proc/self/status && echo OK"
  "memory|--memory 64m --memory-swap 64m|m=\$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes); [ \"\$m\" = 67108864 ] && echo OK"
  "pids|--pids-limit 32|p=\$(cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max); [ \"\$p\" = 32 ] && echo OK"
  "user|--user 1000:1000|[ \"\$(id -u)\" = 1000 ] && echo OK"
  "all|--network none --read-only --cap-drop ALL --security-opt no-new-privileges --memory 64m --memory-swap 64m --pids-limit 32 --user 1000:1000 --tmpfs /tmp|echo x >/tmp/x && echo OK"
)

# smoke test: can a container run at all (default network)?
containers_run() {
  [ "$(docker run --rm "$BASE_IMAGE" echo ok 2>>"$STATE_DIR/probe.log" || true)" = ok ]
}

probe_sandbox() {
  local out="$STATE_DIR/sandbox" tmp p name opts check res
  tmp=$(mktemp "$STATE_DIR/sandbox.XXXX")
  for p in "${PROBES[@]}"; do
    name=${p%%|*}; opts=${p#*|}; check=${opts#*|}; opts=${opts%%|*}
    # shellcheck disable=SC2086
    res=$(docker run --rm $opts "$BASE_IMAGE" sh -c "$check" 2>>"$STATE_DIR/probe.log" || true)
    if [ "$(tail -n1 <<<"$res")" = OK ]; then echo "$name=ok" >>"$tmp"
    else echo "$name=FAILED" >>"$tmp"; fi
  done
  chmod 644 "$tmp"
  mv "$tmp" "$out"
}

sandbox_ok_list() {
  [ -f "$STATE_DIR/sandbox" ] || return 0
  sed -n 's/=ok$//p' "$STATE_DIR/sandbox" | tr '\n' ' ' | sed 's/ $//'
}
sandbox_bad_list() {
  [ -f "$STATE_DIR/sandbox" ] || return 0
  sed -n 's/=FAILED$//p' "$STATE_DIR/sandbox" | tr '\n' ' ' | sed 's/ $//'
}

# -------------------------------------------------------------- 5. env --
write_env() {
  local tmp
  tmp=$(mktemp "$STATE_DIR/env.XXXX")
  cat >"$tmp" <<EOF
# generated by scripts/services.sh - source me:  . $STATE_DIR/env
export CKFLOW_SERVICES_DIR=$STATE_DIR
export DOCKER_HOST=unix://$DOCKER_SOCK
export CKFLOW_TEST_REGISTRY=127.0.0.1:$REG_PORT
export CKFLOW_TEST_AUTH_REGISTRY=127.0.0.1:$AUTH_REG_PORT
export CKFLOW_TEST_REGISTRY_USER=$REG_USER
export CKFLOW_TEST_REGISTRY_PASSWORD=$REG_PASSWORD
export CKFLOW_BASE_IMAGE=$BASE_IMAGE
export CKFLOW_TEST_REGISTRY_IMAGE=127.0.0.1:$REG_PORT/$BASE_REPO:$BASE_TAG
export CKFLOW_TEST_AUTH_REGISTRY_IMAGE=127.0.0.1:$AUTH_REG_PORT/$BASE_REPO:$BASE_TAG
export CKFLOW_DOCKER_API_VERSION=$ENGINE_API
export CKFLOW_DOCKER_SANDBOX_OK="$(sandbox_ok_list)"
EOF
  chmod 644 "$tmp"
  mv "$tmp" "$STATE_DIR/env"
}

# ------------------------------------------------------------- commands --
ENGINE_VERSION="" ENGINE_API="" ENGINE_DRIVER=""
engine_facts() {
  local v
  v=$(curl -s -m 5 --unix-socket "$DOCKER_SOCK" http://localhost/version 2>/dev/null || true)
  ENGINE_VERSION=$(grep -o '"Version":"[^"]*"' <<<"$v" | head -n1 | cut -d'"' -f4 || true)
  ENGINE_API=$(grep -o '"ApiVersion":"[^"]*"' <<<"$v" | head -n1 | cut -d'"' -f4 || true)
  ENGINE_DRIVER=$(docker info --format '{{.Driver}}/{{.CgroupDriver}}/cgroup-v{{.CgroupVersion}}' 2>/dev/null || true)
}

dockerd_who() {
  local pid
  if pid=$(live_pid "$STATE_DIR/dockerd.pid" dockerd); then
    echo "started by services.sh, pid $pid, flags: $(cat "$STATE_DIR/dockerd.flags" 2>/dev/null || echo '?')"
  else
    echo "external (not started by services.sh)"
  fi
}

cmd_start() {
  local t0 flags r
  t0=$(date +%s)
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/lock"
  flock -w 600 9 || die "could not lock $STATE_DIR/lock"

  ensure_packages

  # docker engine + base image + smoke test, falling back through flag sets if
  # we own the daemon and containers cannot run with the current flags.
  if engine_up; then
    ensure_base_image
    # smoke test only when something is new (keeps the no-op run fast)
    if [ $BASE_CREATED = 1 ] || [ ! -f "$STATE_DIR/sandbox" ]; then containers_run || { tail_log "$STATE_DIR/probe.log" 10; die "engine on $DOCKER_SOCK answers but cannot run $BASE_IMAGE ($(dockerd_who)); try: $0 stop && $0 start"; }; fi
  else
    local up=0 sets=()
    mapfile -t sets < <(flagsets_to_try)
    for flags in "${sets[@]}"; do
      start_dockerd_with "$flags" && r=0 || r=$?
      [ $r -eq 2 ] && die "dockerd hangs at start-up; see $STATE_DIR/dockerd.log"
      [ $r -ne 0 ] && continue
      ensure_base_image
      if containers_run; then up=1; break; fi
      warn "containers do not run with flags '$flags', trying next flag set"
      tail_log "$STATE_DIR/probe.log" 8
      stop_our_dockerd
      DOCKERD_STARTED=0
    done
    [ $up -eq 1 ] || die "could not get a working dockerd; see $STATE_DIR/dockerd.log and $STATE_DIR/probe.log"
  fi
  engine_facts

  ensure_registry registry-5000 "$REG_PORT" 0
  ensure_registry registry-5001 "$AUTH_REG_PORT" 1
  ensure_base_pushed "$REG_PORT" 0
  ensure_base_pushed "$AUTH_REG_PORT" 1

  if [ $DOCKERD_STARTED = 1 ] || [ $BASE_CREATED = 1 ] || [ ! -f "$STATE_DIR/sandbox" ]; then
    log "probing container sandbox options"
    probe_sandbox
  fi
  write_env

  local bad
  bad=$(sandbox_bad_list)
  echo "docker     : engine ${ENGINE_VERSION} API ${ENGINE_API} (${ENGINE_DRIVER}) on unix://$DOCKER_SOCK - $(dockerd_who)"
  echo "registry   : http://127.0.0.1:$REG_PORT (no auth) - ${REG_STATE[registry-5000]}, storage $STATE_DIR/registry-5000/data"
  echo "registry   : http://127.0.0.1:$AUTH_REG_PORT (htpasswd $REG_USER/$REG_PASSWORD) - ${REG_STATE[registry-5001]}"
  echo "base image : $BASE_IMAGE (also 127.0.0.1:$REG_PORT/$BASE_REPO:$BASE_TAG, 127.0.0.1:$AUTH_REG_PORT/$BASE_REPO:$BASE_TAG)"
  echo "sandbox    : ok: $(sandbox_ok_list)${bad:+ | FAILED: $bad}"
  echo "env        : . $STATE_DIR/env   (done in $(since "$t0"))"
}

cmd_status() {
  local rc=0 pid code
  if engine_up; then
    engine_facts
    echo "docker     : UP engine ${ENGINE_VERSION} API ${ENGINE_API} (${ENGINE_DRIVER}) - $(dockerd_who)"
  else
    echo "docker     : DOWN (nothing answers on $DOCKER_SOCK)"; rc=1
  fi
  local name port
  for name in registry-5000 registry-5001; do
    if [ "$name" = registry-5000 ]; then port=$REG_PORT; else port=$AUTH_REG_PORT; fi
    code=$(reg_code "$port")
    if pid=$(live_pid "$STATE_DIR/$name/registry.pid" docker-registry); then who="pid $pid"; else who="external"; fi
    if [ "$code" = 000 ]; then echo "registry   : 127.0.0.1:$port DOWN"; rc=1
    else echo "registry   : 127.0.0.1:$port UP (GET /v2/ -> $code) - $who"; fi
  done
  if ! engine_up; then
    echo "base image : unknown (engine down)"
  elif docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image : $BASE_IMAGE present"
  else
    echo "base image : $BASE_IMAGE MISSING"; rc=1
  fi
  [ -f "$STATE_DIR/sandbox" ] && echo "sandbox    : ok: $(sandbox_ok_list)$( b=$(sandbox_bad_list); [ -n "$b" ] && echo " | FAILED: $b")"
  [ -f "$STATE_DIR/env" ] && echo "env        : . $STATE_DIR/env"
  return $rc
}

cmd_stop() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/lock"
  flock -w 600 9 || die "could not lock $STATE_DIR/lock"
  local name pid stopped=0
  for name in registry-5000 registry-5001; do
    if pid=$(live_pid "$STATE_DIR/$name/registry.pid" docker-registry); then
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      local _; for _ in $(seq 1 20); do [ -d "/proc/$pid" ] || break; sleep 0.25; done
      [ -d "/proc/$pid" ] && kill -KILL "$pid" 2>/dev/null || true
      stopped=$((stopped + 1))
    fi
    rm -f "$STATE_DIR/$name/registry.pid"
  done
  if live_pid "$STATE_DIR/dockerd.pid" dockerd >/dev/null; then
    stop_our_dockerd; stopped=$((stopped + 1))
  fi
  rm -f "$STATE_DIR/dockerd.pid"
  echo "stopped $stopped service(s) started by services.sh (external services untouched; state kept in $STATE_DIR)"
}

cmd_selftest() {
  mkdir -p "$STATE_DIR"
  engine_up || die "docker engine is not up; run: $0 start"
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "$BASE_IMAGE missing; run: $0 start"
  probe_sandbox
  cat "$STATE_DIR/sandbox"
  [ -f "$STATE_DIR/env" ] && { engine_facts; write_env; }
  return 0
}

case "${1:-start}" in
  start|up)  cmd_start ;;
  status)    cmd_status ;;
  stop|down) cmd_stop ;;
  restart)   cmd_stop; cmd_start ;;
  selftest)  cmd_selftest ;;
  env)       cat "$STATE_DIR/env" ;;
  -h|--help|help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "usage: $0 [start|status|stop|restart|selftest|env]" ;;
esac
