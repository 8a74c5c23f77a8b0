#!/bin/bash
# Start an OpenSSH server on 127.0.0.1:$SSHD_PORT with key-only login for the
# current user, without systemd, everything under $SSHD_DIR.  Run it once per
# "host" wanted, each with its own port and directory (and so its own host key):
#   SSHD_PORT=2222 SSHD_DIR=/tmp/ci-sshd-a ci/start-sshd.sh
#   SSHD_PORT=2223 SSHD_DIR=/tmp/ci-sshd-b ci/start-sshd.sh
# Safe to run again: a running daemon with the same configuration that accepts
# a login is kept; otherwise it is (re)started.  Keys are kept between runs.
#
# Environment knobs:
#   SSHD_PORT   port (default 2222)
#   SSHD_DIR    directory (default /tmp/ci-sshd)
#   SSHD_ALIAS  Host alias written to $SSHD_DIR/ssh_config (default: basename of SSHD_DIR)
#
# Files in $SSHD_DIR: host_ed25519_key(.pub), client_key(.pub), authorized_keys,
# known_hosts ("[127.0.0.1]:PORT" and "[localhost]:PORT" lines), sshd_config,
# ssh_config, sshd.pid, sshd.log.  Use it as:
#   ssh -F $SSHD_DIR/ssh_config $SSHD_ALIAS 'echo ok'
# or without the config file:
#   ssh -p $SSHD_PORT -i $SSHD_DIR/client_key -o IdentitiesOnly=yes -o BatchMode=yes \
#       -o UserKnownHostsFile=$SSHD_DIR/known_hosts -o StrictHostKeyChecking=yes 127.0.0.1 'echo ok'
# Stop with ci/stop-engines.sh $SSHD_DIR.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SSHD_PORT="${SSHD_PORT:-2222}"
SSHD_DIR="${SSHD_DIR:-/tmp/ci-sshd}"
SSHD_DIR="${SSHD_DIR%/}"
SSHD_ALIAS="${SSHD_ALIAS:-$(basename "$SSHD_DIR")}"
NAME="start-sshd:$SSHD_PORT"
log() { echo "[$NAME] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ "$SSHD_PORT" =~ ^[0-9]+$ ]] || die "SSHD_PORT must be a number, not '$SSHD_PORT'"
case "$SSHD_DIR" in /*) ;; *) die "SSHD_DIR must be an absolute path, not '$SSHD_DIR'" ;; esac

CLEANUP=()
cleanup() { local c; for c in "${CLEANUP[@]}"; do eval "$c" || true; done; }
trap cleanup EXIT

proc_state() { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1; }
pid_alive() {   # PIDFILE COMM; a zombie counts as dead
    local p; [ -s "$1" ] || return 1; p="$(cat "$1" 2>/dev/null)"
    [[ "$p" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] || return 1
    local s; s="$(proc_state "$p")"; [ -n "$s" ] && [ "$s" != Z ]
}
stop_pidfile() {
    if pid_alive "$1" "$2"; then
        local p i; p="$(cat "$1")"
        log "stopping $2 (pid $p)"
        kill "$p" 2>/dev/null || true
        for i in $(seq 1 100); do pid_alive "$1" "$2" || break; sleep 0.1; done
        if pid_alive "$1" "$2"; then kill -9 "$p" 2>/dev/null || true; sleep 0.5; fi
    fi
    rm -f "$1"
}
apt_install() {
    local out; out="$(mktemp)"; CLEANUP+=("rm -f '$out'")
    if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep the postinst scripts from starting services
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
        CLEANUP+=("rm -f /usr/sbin/policy-rc.d")
    fi
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
    if ! "${apt[@]}" install --no-install-recommends "$@" >"$out" 2>&1; then
        log "apt-get install failed; running apt-get update and trying again"
        if ! { "${apt[@]}" update >>"$out" 2>&1 && "${apt[@]}" install --no-install-recommends "$@" >>"$out" 2>&1; }; then
            tail -30 "$out" >&2; die "could not install $*"
        fi
    fi
}
# write_if_changed FILE: stdin becomes FILE unless FILE already has that content; rc 0 when changed
write_if_changed() {
    local tmp; tmp="$(mktemp "$1.XXXXXX")"; cat > "$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
    chmod 600 "$tmp"; mv -f "$tmp" "$1"; return 0
}

# ---------------------------------------------------------------- packages
if [ ! -x /usr/sbin/sshd ] || ! command -v ssh >/dev/null || ! command -v ssh-keygen >/dev/null; then
    [ "$(id -u)" = 0 ] || die "openssh-server is not installed and this is not root"
    log "installing openssh-server"
    apt_install openssh-server openssh-client
fi

ME="$(id -un)"
mkdir -p "$SSHD_DIR"
chmod 700 "$SSHD_DIR"
if [ "$(id -u)" = 0 ]; then
    mkdir -p /run/sshd && chmod 755 /run/sshd   # privilege separation dir, normally made by systemd-tmpfiles
    # With UsePAM no, sshd refuses an account whose password field starts with
    # "!" (locked).  "*" means: no password, not locked.
    if getent shadow "$ME" | cut -d: -f2 | grep -q '^!'; then
        log "account $ME is locked in /etc/shadow ('!'); setting its password field to '*'"
        usermod -p '*' "$ME"
    fi
fi

# ---------------------------------------------------------------- keys
[ -s "$SSHD_DIR/host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "ci-sshd-host-$SSHD_PORT" -f "$SSHD_DIR/host_ed25519_key" </dev/null
[ -s "$SSHD_DIR/client_key" ]       || ssh-keygen -q -t ed25519 -N '' -C "ci-sshd-client" -f "$SSHD_DIR/client_key" </dev/null
chmod 600 "$SSHD_DIR/host_ed25519_key" "$SSHD_DIR/client_key"
write_if_changed "$SSHD_DIR/authorized_keys" < "$SSHD_DIR/client_key.pub" || true

# known_hosts straight from the host public key: no ssh-keyscan, no hashing
# (Debian's client hashes the lines it adds itself: HashKnownHosts yes).
HOSTKEY="$(cut -d' ' -f1,2 "$SSHD_DIR/host_ed25519_key.pub")"
write_if_changed "$SSHD_DIR/known_hosts" <<EOF || true
[127.0.0.1]:$SSHD_PORT $HOSTKEY
[localhost]:$SSHD_PORT $HOSTKEY
EOF

# ---------------------------------------------------------------- sshd_config
# Its own config file, so UsePAM is off (no pam_loginuid trouble in containers).
# StrictModes no: AuthorizedKeysFile is under /tmp, whose modes sshd rejects.
CONF_CHANGED=0
write_if_changed "$SSHD_DIR/sshd_config" <<EOF && CONF_CHANGED=1
# generated by ci/start-sshd.sh
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $SSHD_DIR/host_ed25519_key
PidFile $SSHD_DIR/sshd.pid
AuthorizedKeysFile $SSHD_DIR/authorized_keys
AllowUsers $ME
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
LogLevel INFO
EOF

# ---------------------------------------------------------------- ssh_config
# A unix socket path is limited to about 104 characters: %C is a 40-character
# hash of the connection, and a long SSHD_DIR falls back to /tmp.
CP="$SSHD_DIR/cm-%C"
[ "${#SSHD_DIR}" -le 55 ] || CP="/tmp/ci-ssh-cm-%C"
write_if_changed "$SSHD_DIR/ssh_config" <<EOF || true
# generated by ci/start-sshd.sh: ssh -F $SSHD_DIR/ssh_config $SSHD_ALIAS 'cmd'
Host $SSHD_ALIAS
    HostName 127.0.0.1
    Port $SSHD_PORT
    User $ME
    IdentityFile $SSHD_DIR/client_key
    IdentitiesOnly yes
    UserKnownHostsFile $SSHD_DIR/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    ControlMaster auto
    ControlPath $CP
    ControlPersist 60
EOF
chmod 644 "$SSHD_DIR/ssh_config" "$SSHD_DIR/known_hosts"

# ---------------------------------------------------------------- daemon
# the probe goes through ssh_config, without a control master (no lingering ssh)
probe() {
    timeout 20 ssh -F "$SSHD_DIR/ssh_config" -o ControlMaster=no -o ControlPath=none \
        "$SSHD_ALIAS" true </dev/null 2>"$SSHD_DIR/probe.err"
}
if pid_alive "$SSHD_DIR/sshd.pid" sshd; then
    if [ "$CONF_CHANGED" = 0 ] && probe; then
        log "sshd already running (pid $(cat "$SSHD_DIR/sshd.pid")) on 127.0.0.1:$SSHD_PORT, dir $SSHD_DIR, alias $SSHD_ALIAS"
        exit 0
    fi
    log "restarting sshd (config changed or login failed)"
    stop_pidfile "$SSHD_DIR/sshd.pid" sshd
fi
rm -f "$SSHD_DIR/sshd.pid"

/usr/sbin/sshd -t -f "$SSHD_DIR/sshd_config" || die "sshd -t rejects $SSHD_DIR/sshd_config"
log "starting sshd on 127.0.0.1:$SSHD_PORT"
/usr/sbin/sshd -f "$SSHD_DIR/sshd_config" -E "$SSHD_DIR/sshd.log"   # daemonises, writes PidFile

for _ in $(seq 1 50); do
    if probe; then
        log "sshd up (pid $(cat "$SSHD_DIR/sshd.pid")) on 127.0.0.1:$SSHD_PORT, dir $SSHD_DIR, alias $SSHD_ALIAS"
        exit 0
    fi
    sleep 0.2
done
log "last ssh error: $(cat "$SSHD_DIR/probe.err" 2>/dev/null)"
tail -20 "$SSHD_DIR/sshd.log" >&2 || true
die "sshd on 127.0.0.1:$SSHD_PORT does not accept a login"
