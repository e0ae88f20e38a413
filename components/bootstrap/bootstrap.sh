#!/usr/bin/env bash
# Bring this instance to "serving the configured models on the GPU".
#
# ollama-bootstrap.service runs this on every boot. Each step checks what is already
# done and skips it, so a reboot repeats no download, and a new instance that is handed
# an existing model disk reuses the models on it.
#
# Order: packages, then the driver build in the background while the model disk is
# mounted, Ollama is installed and the models are pulled (Ollama pulls without a GPU).
# Once both branches end, Ollama restarts to find the GPU and the first model is loaded.
set -Eeuo pipefail

CONFIG=${BOOTSTRAP_CONFIG:-/etc/ollama-bootstrap/bootstrap.env}
STATE_DIR=${BOOTSTRAP_STATE_DIR:-/var/lib/ollama-bootstrap}
LOG_FILE=${BOOTSTRAP_LOG:-/var/log/ollama-bootstrap.log}
DATA_DIR=/data
MODELS_DIR=$DATA_DIR/ollama/models
RUN_DIR=$STATE_DIR/run
STATUS_FILE=$STATE_DIR/status.json
PHASES=(packages driver disk ollama proxy pull gpu preload)
AUTH_HASH_FILE=/etc/ollama-bootstrap/api-key.sha256

# shellcheck source=/dev/null
source "$CONFIG"
: "${OLLAMA_VERSION:?} ${OLLAMA_BASE_URL:?} ${DRIVER_VERSION:?} ${DRIVER_BASE_URL:?} ${MODELS:?}"
: "${DATA_DISK_SERIAL?} ${DATA_DISK_WAIT_SECONDS:?} ${OLLAMA_BIND:?} ${OLLAMA_KEEP_ALIVE:?}"
: "${MODEL_REGISTRY?} ${MODEL_REGISTRY_INSECURE:?} ${PULL_STALL_SECONDS:?} ${PULL_RETRIES:?}"
: "${API_KEY_SHA256?} ${ALLOW_MODEL_MANAGEMENT:?} ${ALLOWED_ORIGINS?}"
# The bootstrap talks to Ollama directly on loopback, never through the proxy.
OLLAMA_API=http://127.0.0.1:${OLLAMA_BIND##*:}
# Ports of the proxy and of ollama-auth.service; tests override them.
PROXY_PORT=${PROXY_PORT:-11434}
AUTH_PORT=${AUTH_PORT:-11436}

log() {
  printf '%s %s\n' "$(date -u +%FT%TZ)" "$*" >&2
}

now() {
  date +%s.%3N
}

json_string() {
  local text=$1
  text=${text//\\/\\\\}
  text=${text//\"/\\\"}
  text=${text//$'\n'/\\n}
  text=${text//$'\t'/ }
  text=${text//$'\r'/}
  printf '"%s"' "$text"
}

# Rewrite status.json from the files under $RUN_DIR. Both branches call this, so it
# holds a lock and replaces the file atomically: readers never see half a file.
write_status() {
  (
    flock 9
    local state phase error bytes_pulled=0 bytes_total=0 name first=1 models_json=""
    local phase_state phase_start phase_end
    state=$(cat "$RUN_DIR/state")
    phase=$(cat "$RUN_DIR/phase")
    error=null
    [[ -s $RUN_DIR/error ]] && error=$(json_string "$(cat "$RUN_DIR/error")")
    [[ -s $RUN_DIR/bytes ]] && read -r bytes_pulled bytes_total < "$RUN_DIR/bytes"
    for name in $MODELS; do
      models_json+="${models_json:+,}$(json_string "$name")"
    done
    {
      printf '{"state":"%s","phase":"%s","error":%s,' "$state" "$phase" "$error"
      printf '"started_at":%s,"updated_at":%s,' "$(cat "$RUN_DIR/started_at")" "$(now)"
      printf '"bytes_pulled":%s,"bytes_total":%s,"models":[%s],"phases":{' \
        "$bytes_pulled" "$bytes_total" "$models_json"
      for name in "${PHASES[@]}"; do
        [[ -s $RUN_DIR/phase.$name ]] || continue
        # A phase file holds: state start end, with "-" as the end while running.
        read -r phase_state phase_start phase_end < "$RUN_DIR/phase.$name"
        [[ $first == 1 ]] || printf ','
        first=0
        printf '"%s":{"state":"%s","start":%s,"end":%s}' \
          "$name" "$phase_state" "$phase_start" "${phase_end/#-/null}"
      done
      printf '}}\n'
    } > "$STATUS_FILE.tmp"
    mv -f "$STATUS_FILE.tmp" "$STATUS_FILE"
  ) 9> "$RUN_DIR/lock"
}

# Record why the bootstrap failed. The first error wins: later ones are consequences.
record_error() {
  [[ -s $RUN_DIR/error ]] || printf '%s\n' "$1" > "$RUN_DIR/error"
  log "ERROR: $1"
}

die() {
  record_error "$1"
  exit 1
}

# Run one phase in a child subshell and record how it ended. Call it as a plain command,
# never in `if`, `&&` or `||`: bash ignores `set -e` and the ERR trap in every command
# run from such a context, subshells included, so a failing step would go unnoticed.
run_phase() {
  local name=$1 start rc=0
  shift
  start=$(now)
  printf 'running %s -\n' "$start" > "$RUN_DIR/phase.$name"
  [[ $name == driver ]] || printf '%s\n' "$name" > "$RUN_DIR/phase"
  write_status
  log "phase $name: started"

  (
    trap 'die "phase $name: command \"$BASH_COMMAND\" failed (exit $?)"' ERR
    "$@"
  ) &
  wait "$!" || rc=$?

  if [[ $rc -eq 0 ]]; then
    printf 'done %s %s\n' "$start" "$(now)" > "$RUN_DIR/phase.$name"
    log "phase $name: done"
  else
    printf 'failed %s %s\n' "$start" "$(now)" > "$RUN_DIR/phase.$name"
    record_error "phase $name failed (exit $rc)"
    # The first failed phase is the one to report; later failures follow from it.
    [[ -s $RUN_DIR/failed_phase ]] || printf '%s\n' "$name" > "$RUN_DIR/failed_phase"
  fi
  write_status
}

phase_ok() {
  local state _
  # 2> comes first: bash applies redirections left to right.
  read -r state _ 2> /dev/null < "$RUN_DIR/phase.$1" || return 1
  [[ $state == "done" ]]
}

# Download URL to FILE, resuming and retrying: mirrors in mainland China drop
# connections, and curl's own --retry does not cover every error on older curl.
download() {
  local url=$1 file=$2 attempt
  for attempt in 1 2 3 4 5; do
    if curl -fsSL --connect-timeout 20 --speed-limit 1024 --speed-time 60 -C - -o "$file" "$url"; then
      return 0
    fi
    log "download of $url failed (attempt $attempt of 5), retrying"
    sleep $((attempt * 3))
  done
  die "download failed: $url"
}

install_packages() {
  local kernel marker
  kernel=$(uname -r)
  marker=$STATE_DIR/packages-$kernel
  if [[ -e $marker ]]; then
    log "packages for kernel $kernel already installed"
    return 0
  fi

  local proxy_packages=()
  [[ -z $API_KEY_SHA256 ]] || proxy_packages=(nginx python3)

  if command -v dnf > /dev/null; then
    # Build the driver against this kernel's headers exactly: a plain kernel-devel
    # can bring a newer kernel's headers.
    dnf install -y "kernel-devel-$kernel" gcc make elfutils-libelf-devel tar zstd curl jq util-linux \
      "${proxy_packages[@]}"
    # NOTE: unverified which Alibaba Cloud Linux 3 repository carries dkms; without
    # it the driver is built for this kernel only, and a later boot on a new kernel
    # rebuilds it because nvidia-smi fails there.
    dnf install -y dkms || log "dkms not available; installing the driver without DKMS"
  elif command -v apt-get > /dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "linux-headers-$kernel" build-essential dkms \
      ca-certificates curl jq zstd tar util-linux "${proxy_packages[@]}"
  else
    die "neither dnf nor apt-get found; supported: Alibaba Cloud Linux 3, Ubuntu 22.04/24.04"
  fi
  touch "$marker"
}

driver_works() {
  local version
  version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2> /dev/null | head -n 1) || return 1
  [[ $version == "$DRIVER_VERSION" ]]
}

install_driver() {
  local installer flags=(--silent)
  if driver_works; then
    log "NVIDIA driver $DRIVER_VERSION already works"
  else
    # The installer fails to build while nouveau drives the GPU.
    printf 'blacklist nouveau\noptions nouveau modeset=0\n' > /etc/modprobe.d/blacklist-nouveau.conf
    if grep -q '^nouveau ' /proc/modules 2> /dev/null; then
      modprobe -r nouveau || die "the nouveau driver is loaded and cannot be unloaded; reboot the instance"
    fi

    installer=$STATE_DIR/NVIDIA-Linux-x86_64-$DRIVER_VERSION.run
    download "$DRIVER_BASE_URL/$DRIVER_VERSION/NVIDIA-Linux-x86_64-$DRIVER_VERSION.run" "$installer"
    # DKMS rebuilds the module when a kernel update arrives.
    command -v dkms > /dev/null && flags+=(--dkms)
    sh "$installer" "${flags[@]}" || die "NVIDIA driver $DRIVER_VERSION installer failed; see /var/log/nvidia-installer.log"
    rm -f "$installer"
  fi

  # Without nvidia_uvm Ollama silently falls back to the CPU.
  printf 'nvidia_uvm\n' > /etc/modules-load.d/nvidia-uvm.conf
  nvidia-modprobe -u -c0 || modprobe nvidia_uvm || die "cannot load the nvidia_uvm kernel module"
  nvidia-smi || die "nvidia-smi failed after installing driver $DRIVER_VERSION"
}

ensure_ollama_user() {
  if ! id ollama > /dev/null 2>&1; then
    useradd --system --user-group --create-home --home-dir /usr/share/ollama --shell /sbin/nologin ollama
  fi
  local group
  for group in video render; do
    if getent group "$group" > /dev/null; then
      usermod -a -G "$group" ollama
    fi
  done
}

find_data_disk() {
  local deadline=$((SECONDS + DATA_DISK_WAIT_SECONDS)) link
  while :; do
    for link in /dev/disk/by-id/*"$DATA_DISK_SERIAL"; do
      if [[ -e $link ]]; then
        readlink -f "$link"
        return 0
      fi
    done
    [[ $SECONDS -lt $deadline ]] || return 1
    sleep 2
  done
}

prepare_disk() {
  local device fstype uuid
  ensure_ollama_user
  if mountpoint -q "$DATA_DIR"; then
    log "$DATA_DIR already mounted"
  else
    # The disk is attached after the instance starts, so wait for it by serial (its disk
    # ID without "d-"): the device name the API reports can differ from the guest's.
    device=$(find_data_disk) ||
      die "data disk missing: no /dev/disk/by-id/*$DATA_DISK_SERIAL after $DATA_DISK_WAIT_SECONDS s; models are not written to the system disk"
    fstype=$(blkid -p -s TYPE -o value "$device" || true)
    if [[ -z $fstype ]]; then
      if [[ -n $(blkid -p -s PTTYPE -o value "$device" || true) ]]; then
        die "data disk $device has a partition table but no filesystem; refusing to format it"
      fi
      log "formatting empty data disk $device"
      mkfs.ext4 -q -L ollama-data "$device"
      fstype=ext4
    fi
    uuid=$(blkid -s UUID -o value "$device")
    if ! grep -q "^UUID=$uuid " /etc/fstab; then
      sed -i "\\#[[:space:]]${DATA_DIR}[[:space:]]#d" /etc/fstab
      printf 'UUID=%s %s %s defaults,nofail,x-systemd.device-timeout=30s 0 2\n' \
        "$uuid" "$DATA_DIR" "$fstype" >> /etc/fstab
      systemctl daemon-reload
    fi
    mkdir -p "$DATA_DIR"
    mount "$DATA_DIR"
  fi

  mkdir -p "$MODELS_DIR"
  # A replaced instance creates the ollama user anew, possibly with another UID.
  if [[ $(stat -c %U "$MODELS_DIR") != ollama ]]; then
    chown -R ollama:ollama "$DATA_DIR/ollama"
  fi
}

install_ollama() {
  local archive marker=$STATE_DIR/ollama-version
  if [[ $(cat "$marker" 2> /dev/null) == "$OLLAMA_VERSION" && -x /usr/bin/ollama ]]; then
    log "Ollama $OLLAMA_VERSION already installed"
  else
    # The release archive rather than install.sh: the script can install distribution
    # driver packages over the .run driver, and rewrites the unit file on every run.
    archive=$STATE_DIR/ollama-linux-amd64.tar.zst
    download "$OLLAMA_BASE_URL/v$OLLAMA_VERSION/ollama-linux-amd64.tar.zst" "$archive"
    rm -rf /usr/lib/ollama
    zstd -dc "$archive" | tar -x -C /usr
    rm -f "$archive"
    printf '%s\n' "$OLLAMA_VERSION" > "$marker"
  fi

  write_ollama_dropin
  systemctl daemon-reload
  systemctl enable ollama.service
  systemctl restart ollama.service
  wait_for_api
}

# Every Ollama setting lives in this drop-in, so the unit file stays the packaged one.
write_ollama_dropin() {
  mkdir -p /etc/systemd/system/ollama.service.d
  cat > /etc/systemd/system/ollama.service.d/10-bootstrap.conf << EOF
[Unit]
# Never start without the model disk: Ollama would fill the system disk.
RequiresMountsFor=$DATA_DIR

[Service]
Environment="OLLAMA_HOST=$OLLAMA_BIND"
Environment="OLLAMA_MODELS=$MODELS_DIR"
Environment="OLLAMA_KEEP_ALIVE=$OLLAMA_KEEP_ALIVE"
Environment="OLLAMA_ORIGINS=$ALLOWED_ORIGINS"
EOF
}

# With an API key, nginx serves port 11434 and asks ollama-auth.py about every request,
# while Ollama listens on loopback only. Without a key, Ollama serves 11434 directly.
configure_proxy() {
  if [[ -z $API_KEY_SHA256 ]]; then
    rm -f /etc/nginx/conf.d/ollama.conf
    if systemctl is-enabled --quiet ollama-auth.service 2> /dev/null; then
      systemctl disable --now ollama-auth.service
    fi
    log "no API key configured: Ollama serves $OLLAMA_BIND without authentication"
    return 0
  fi

  printf '%s\n' "$API_KEY_SHA256" > "$AUTH_HASH_FILE"
  chmod 0644 "$AUTH_HASH_FILE"
  write_nginx_config > /etc/nginx/conf.d/ollama.conf
  # On SELinux systems nginx may not connect to local ports by default.
  if command -v getenforce > /dev/null && [[ $(getenforce) == Enforcing ]]; then
    setsebool -P httpd_can_network_connect 1
  fi
  nginx -t
  systemctl daemon-reload
  systemctl enable ollama-auth.service nginx.service
  systemctl restart ollama-auth.service nginx.service
}

write_nginx_config() {
  local management="return 403;"
  if [[ $ALLOW_MODEL_MANAGEMENT == true ]]; then
    management="auth_request /_auth; proxy_pass http://ollama;"
  fi
  cat << EOF
# Written by ollama-bootstrap: the authenticated front of Ollama on port 11434.
upstream ollama {
    server $OLLAMA_BIND;
    keepalive 16;
}

server {
    listen $PROXY_PORT;

    # Chat requests may carry images, and generations may run for many minutes.
    client_max_body_size 1g;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # On loopback, Ollama rejects Host names that are not local (its DNS-rebinding
    # guard), and clients send the instance's public address.
    proxy_set_header Host $OLLAMA_BIND;
    proxy_read_timeout 1h;
    proxy_send_timeout 1h;
    # Streamed tokens must reach the client as they are produced.
    proxy_buffering off;
    proxy_request_buffering off;

    location = /_auth {
        internal;
        proxy_pass http://127.0.0.1:$AUTH_PORT;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-Method \$request_method;
        proxy_set_header X-Original-URI \$request_uri;
        proxy_set_header X-Real-IP \$remote_addr;
    }

    # Model management, and the endpoints that act for the server's ollama.com
    # account, stay closed unless allowModelManagement is set.
    location ~ ^/api/(pull|push|create|copy|delete|me|signout)\$ {
        $management
    }
    location ^~ /api/blobs/ {
        $management
    }
    location ^~ /api/user/ {
        $management
    }
    location ^~ /api/experimental/ {
        $management
    }

    location / {
        auth_request /_auth;
        proxy_pass http://ollama;
    }
}
EOF
}

wait_for_api() {
  local attempt
  for attempt in $(seq 1 60); do
    if curl -fsS --max-time 5 "$OLLAMA_API/api/version" > /dev/null 2>&1; then
      return 0
    fi
    [[ $attempt -lt 60 ]] && sleep 1
  done
  die "Ollama API at $OLLAMA_API did not respond within 60 s; see journalctl -u ollama"
}

# Model name as pulled: through the mirror registry when one is set.
registry_name() {
  local model=$1
  if [[ -z $MODEL_REGISTRY ]]; then
    printf '%s\n' "$model"
  elif [[ $model == */* ]]; then
    printf '%s/%s\n' "$MODEL_REGISTRY" "$model"
  else
    printf '%s/library/%s\n' "$MODEL_REGISTRY" "$model"
  fi
}

normalize_model() {
  local model=$1
  [[ ${model##*/} == *:* ]] || model=$model:latest
  printf '%s\n' "$model"
}

model_present() {
  curl -fsS --max-time 10 "$OLLAMA_API/api/tags" |
    jq -e --arg name "$(normalize_model "$1")" '.models[] | select(.name == $name)' > /dev/null
}

# Pull one model once. Return 1 with the reason in $RUN_DIR/pull_reason when the stream
# reports an error, ends early, or makes no progress for PULL_STALL_SECONDS.
pull_once() {
  local source=$1 base_pulled=$2 line fd curl_pid insecure=false sum=0 total_sum=0 digest
  local last_progress=$SECONDS best=-1 last_write=0 read_rc status="" last_status=""
  local -A completed=() totals=()
  [[ $MODEL_REGISTRY_INSECURE == true ]] && insecure=true

  exec {fd}< <(curl -sS -N --max-time 0 -X POST "$OLLAMA_API/api/pull" \
    -d "{\"model\":\"$source\",\"insecure\":$insecure,\"stream\":true}")
  curl_pid=$!

  while :; do
    read_rc=0
    IFS= read -r -t "$PULL_STALL_SECONDS" -u "$fd" line || read_rc=$?
    if [[ $read_rc -gt 128 ]]; then
      printf 'no progress for %s s\n' "$PULL_STALL_SECONDS" > "$RUN_DIR/pull_reason"
      break
    elif [[ $read_rc -ne 0 ]]; then
      printf 'pull stream ended before "success"\n' > "$RUN_DIR/pull_reason"
      break
    fi

    if [[ $line =~ \"error\":\"([^\"]*)\" ]]; then
      printf '%s\n' "${BASH_REMATCH[1]}" > "$RUN_DIR/pull_reason"
      break
    elif [[ $line == *'"status":"success"'* ]]; then
      # Record the final count: progress lines are written at most every 2 s.
      printf '%s %s\n' "$((base_pulled + total_sum))" "$((base_pulled + total_sum))" > "$RUN_DIR/bytes"
      write_status
      exec {fd}<&-
      return 0
    fi

    if [[ $line =~ \"digest\":\"([^\"]+)\" ]]; then
      digest=${BASH_REMATCH[1]}
      [[ $line =~ \"total\":([0-9]+) ]] && totals[$digest]=${BASH_REMATCH[1]}
      [[ $line =~ \"completed\":([0-9]+) ]] && completed[$digest]=${BASH_REMATCH[1]}
    fi
    sum=0
    total_sum=0
    for digest in "${!totals[@]}"; do
      sum=$((sum + ${completed[$digest]:-0}))
      total_sum=$((total_sum + totals[$digest]))
    done
    [[ $line =~ \"status\":\"([^\"]*)\" ]] && status=${BASH_REMATCH[1]}
    # Progress lines keep coming during a stall, so only a growing byte count or a new
    # step (such as verifying the digest of a large blob) counts as progress.
    if [[ $sum -gt $best || $status != "$last_status" ]]; then
      best=$sum
      last_status=$status
      last_progress=$SECONDS
    elif ((SECONDS - last_progress >= PULL_STALL_SECONDS)); then
      printf 'no progress for %s s (stuck at %s of %s bytes)\n' "$PULL_STALL_SECONDS" "$sum" "$total_sum" > "$RUN_DIR/pull_reason"
      break
    fi
    if ((SECONDS - last_write >= 2)); then
      printf '%s %s\n' "$((base_pulled + sum))" "$((base_pulled + total_sum))" > "$RUN_DIR/bytes"
      write_status
      last_write=$SECONDS
    fi
  done

  kill "$curl_pid" 2> /dev/null || true
  exec {fd}<&-
  return 1
}

pull_models() {
  local model source attempt pulled=0 total
  for model in $MODELS; do
    if model_present "$model"; then
      log "model $model already on the data disk"
      continue
    fi
    source=$(registry_name "$model")
    attempt=0
    until pull_once "$source" "$pulled"; do
      attempt=$((attempt + 1))
      if [[ $attempt -gt $PULL_RETRIES ]]; then
        die "pull of $model failed after $attempt attempt(s): $(cat "$RUN_DIR/pull_reason")"
      fi
      # A re-run resumes the partial download; a stalled part often succeeds then.
      log "pull of $model failed: $(cat "$RUN_DIR/pull_reason"); retry $attempt of $PULL_RETRIES"
      sleep $((attempt * 2))
    done
    if [[ $source != "$model" ]]; then
      curl -fsS -X POST "$OLLAMA_API/api/copy" -d "{\"source\":\"$source\",\"destination\":\"$model\"}"
      curl -fsS -X DELETE "$OLLAMA_API/api/delete" -d "{\"model\":\"$source\"}"
    fi
    [[ -s $RUN_DIR/bytes ]] && read -r pulled total < "$RUN_DIR/bytes"
    pulled=${total:-$pulled}
    log "model $model pulled"
  done
}

# Ollama picks its compute backend at start-up, so it restarts once the driver works.
restart_on_gpu() {
  systemctl restart ollama.service
  wait_for_api
}

preload_first_model() {
  local model size size_vram
  model=$(normalize_model "${MODELS%% *}")
  curl -fsS --max-time 1800 -X POST "$OLLAMA_API/api/generate" \
    -d "{\"model\":\"$model\",\"keep_alive\":\"$OLLAMA_KEEP_ALIVE\",\"stream\":false}" > /dev/null
  read -r size size_vram < <(curl -fsS "$OLLAMA_API/api/ps" |
    jq -r --arg name "$model" '.models[] | select(.name == $name) | "\(.size) \(.size_vram)"')
  [[ -n ${size:-} ]] || die "model $model is not loaded after the preload request"
  if [[ $size_vram -lt $size ]]; then
    die "model $model runs on the CPU: $size_vram of $size bytes in VRAM"
  fi
  log "model $model loaded, $size_vram bytes in VRAM"
}

finish() {
  local state=$1
  printf '%s\n' "$state" > "$RUN_DIR/state"
  if [[ $state == failed ]]; then
    cat "$RUN_DIR/failed_phase" > "$RUN_DIR/phase"
  else
    printf 'ready\n' > "$RUN_DIR/phase"
  fi
  write_status
  log "bootstrap $state"
}

main() {
  local driver_pid
  mkdir -p "$STATE_DIR"
  rm -rf "$RUN_DIR"
  mkdir -p "$RUN_DIR"
  now > "$RUN_DIR/started_at"
  printf 'running\n' > "$RUN_DIR/state"
  printf 'packages\n' > "$RUN_DIR/phase"
  exec > >(tee -a "$LOG_FILE") 2>&1
  log "bootstrap started: models=$MODELS ollama=$OLLAMA_VERSION driver=$DRIVER_VERSION"

  run_phase packages install_packages
  if phase_ok packages; then
    run_phase driver install_driver &
    driver_pid=$!
    run_phase disk prepare_disk
    if phase_ok disk; then
      run_phase ollama install_ollama
    fi
    if phase_ok ollama; then
      run_phase proxy configure_proxy
    fi
    if phase_ok proxy; then
      run_phase pull pull_models
    fi
    wait "$driver_pid"
  fi
  if phase_ok pull && phase_ok driver; then
    run_phase gpu restart_on_gpu
  fi
  if phase_ok gpu; then
    run_phase preload preload_first_model
  fi

  if phase_ok preload; then
    finish ready
  else
    finish failed
    exit 1
  fi
}

# Sourcing the script (as the proxy tests do) defines the functions without running.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
