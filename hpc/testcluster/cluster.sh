#!/usr/bin/env bash
# A real single-node Slurm test cluster (munge + slurmctld + slurmd) for matdx tests.
#
# Usage:
#   bash hpc/testcluster/cluster.sh start   [--cpus N] [--memory MB] [--no-install] [--timeout S]
#   bash hpc/testcluster/cluster.sh stop
#   bash hpc/testcluster/cluster.sh restart [--cpus N] [--memory MB] [--no-install] [--timeout S]
#   bash hpc/testcluster/cluster.sh status
#   bash hpc/testcluster/cluster.sh restart-controller
#
# start    installs Slurm, munge and OpenMPI from Debian when missing, writes
#          /etc/slurm/slurm.conf, starts munged, slurmctld and slurmd without systemd,
#          and waits until the node is idle. Starting a running cluster with the same
#          settings does nothing; with other settings (e.g. --cpus) it restarts it.
# stop     stops only the daemons this script started, by the pids it recorded;
#          stopping a cluster that is not running is not an error.
# restart-controller  stops slurmctld (SIGTERM: it saves its state) and starts it again
#          keeping its jobs, as a site's controller restart does (the chaos suite's fault).
# status   prints the daemons, the node state and the settings; exits 0 when the
#          cluster is up and its node accepts jobs, 3 otherwise.
#
# --cpus N advertises N CPUs (SlurmdParameters=config_overrides), so packing with
# more slots than the machine has can be tested. Must run as root. Settings and
# pitfalls follow /work/shared/notes/slurm-testcluster.md.
set -euo pipefail

STATE_DIR=${MATDX_TESTCLUSTER_STATE:-/run/matdx-testcluster}
SLURM_CONF=/etc/slurm/slurm.conf
MARKER="# written by matdx hpc/testcluster/cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge openmpi-bin libopenmpi-dev)

log() { printf '[testcluster] %s\n' "$*" >&2; }
die() { printf '[testcluster] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- arguments
COMMAND=${1:-}
[[ -n "$COMMAND" ]] || { usage; exit 2; }
shift
CPUS=""
MEMORY=""
INSTALL=1
TIMEOUT=60
value_of() {  # option remaining-arg-count next-arg
    [[ $2 -ge 2 ]] || die "option $1 needs a value"
    printf '%s' "$3"
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cpus) CPUS=$(value_of "$1" $# "${2:-}"); shift 2 ;;
        --cpus=*) CPUS=${1#*=}; shift ;;
        --memory) MEMORY=$(value_of "$1" $# "${2:-}"); shift 2 ;;
        --memory=*) MEMORY=${1#*=}; shift ;;
        --timeout) TIMEOUT=$(value_of "$1" $# "${2:-}"); shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (accepted: --cpus N, --memory MB, --timeout S, --no-install)" ;;
    esac
done
is_uint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[[ -z "$CPUS" ]] || is_uint "$CPUS" || die "--cpus must be a positive integer, got '$CPUS'"
[[ -z "$MEMORY" ]] || is_uint "$MEMORY" || die "--memory must be a positive integer (MB), got '$MEMORY'"
is_uint "$TIMEOUT" || die "--timeout must be a positive integer (seconds), got '$TIMEOUT'"

NODE=$(hostname -s)

# ---------------------------------------------------------------- pid bookkeeping
# A recorded pid counts only while /proc/PID/comm still names the daemon, so a
# recycled pid is never signalled. Zombies do not count: the daemons fork twice,
# and where PID 1 does not reap (containers) the exited parents linger as zombies.
is_zombie() {  # pid
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ "${stat%% *}" == Z ]]
}

pid_alive() {  # pid comm
    local pid=$1 comm=$2
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
    ! is_zombie "$pid"
}

recorded_pid() {  # name -> prints pid or nothing
    local file="$STATE_DIR/$1.pid"
    if [[ -f "$file" ]]; then cat "$file"; fi
}

daemon_running() {  # name (munged|slurmctld|slurmd): ours and alive
    pid_alive "$(recorded_pid "$1")" "$1"
}

foreign_pids() {  # comm -> pids of processes with this name that we did not record
    local comm=$1 ours pid
    ours=$(recorded_pid "$comm")
    for pid in $(pgrep -x "$comm" 2>/dev/null || true); do
        [[ "$pid" == "$ours" ]] || is_zombie "$pid" || printf '%s ' "$pid"
    done
}

stop_daemon() {  # name
    local name=$1 pid i
    pid=$(recorded_pid "$name")
    if [[ -z "$pid" ]]; then
        return 0
    fi
    if pid_alive "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            pid_alive "$pid" "$name" || break
            sleep 0.1
        done
        if pid_alive "$pid" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$STATE_DIR/$name.pid"
}

wait_pidfile() {  # file comm -> prints pid once the daemon wrote it and is alive
    local file=$1 comm=$2 i pid
    for ((i = 0; i < 100; i++)); do
        if [[ -s "$file" ]]; then
            pid=$(tr -dc '0-9' < "$file")
            if pid_alive "$pid" "$comm"; then
                printf '%s' "$pid"
                return 0
            fi
        fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------- install and configure
install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $INSTALL -eq 1 ]] || die "packages missing and --no-install given: ${missing[*]}"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${PACKAGES[@]}" >&2
}

real_memory_mb() {  # 95 % of what slurmd -C reports
    local reported
    reported=$(/usr/sbin/slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    [[ -n "$reported" ]] || die "could not read RealMemory from 'slurmd -C'"
    echo $((reported * 95 / 100))
}

write_config() {  # cpus memory
    local cpus=$1 memory=$2
    mkdir -p /etc/slurm
    if [[ -f "$SLURM_CONF" ]] && ! grep -qF "$MARKER" "$SLURM_CONF"; then
        if [[ ! -f "$SLURM_CONF.matdx-backup" ]]; then
            cp -p "$SLURM_CONF" "$SLURM_CONF.matdx-backup"
            log "kept the previous slurm.conf as $SLURM_CONF.matdx-backup"
        fi
    fi
    cat > "$SLURM_CONF.tmp" <<EOF
$MARKER
# cpus=$cpus memory=$memory
ClusterName=ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE_DIR/slurmctld.daemon.pid
SlurmdPidFile=$STATE_DIR/slurmd.daemon.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=/var/log/slurm/jobcomp.log
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
DependencyParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=300
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$SLURM_CONF.tmp" "$SLURM_CONF"
    chmod 0644 "$SLURM_CONF"
}

configured_setting() {  # key (cpus|memory) -> value from our slurm.conf, or nothing
    [[ -f "$SLURM_CONF" ]] && grep -qF "$MARKER" "$SLURM_CONF" || return 0
    sed -n "s/^# cpus=\([0-9]*\) memory=\([0-9]*\)$/\1 \2/p" "$SLURM_CONF" \
        | awk -v key="$1" '{ print (key == "cpus") ? $1 : $2 }'
}

prepare_dirs() {
    mkdir -p "$STATE_DIR" /run/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    chown slurm:slurm /var/spool/slurmctld /var/log/slurm
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating a munge key"
        /usr/sbin/mungekey --create --force --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
}

# ---------------------------------------------------------------- start / stop / status
start_munged() {
    if daemon_running munged; then
        return 0
    fi
    local foreign
    foreign=$(foreign_pids munged)
    if [[ -n "$foreign" ]]; then
        # Someone else's munged serves the same socket: use it, never stop it.
        log "using the munged already running (pid ${foreign% }); it will not be stopped"
        rm -f "$STATE_DIR/munged.pid"
        return 0
    fi
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    local pid
    pid=$(wait_pidfile /run/munge/munged.pid munged) || die "munged did not start; see /var/log/munge/munged.log"
    echo "$pid" > "$STATE_DIR/munged.pid"
    log "munged started (pid $pid)"
}

start_slurm_daemon() {  # name (slurmctld|slurmd) [keep: slurmctld recovers its saved jobs]
    local name=$1 keep=${2:-} pid
    if daemon_running "$name"; then
        return 0
    fi
    rm -f "$STATE_DIR/$name.daemon.pid"
    if [[ "$name" == slurmctld && "$keep" == keep ]]; then
        /usr/sbin/slurmctld
    elif [[ "$name" == slurmctld ]]; then
        /usr/sbin/slurmctld -c
    else
        /usr/sbin/slurmd
    fi
    pid=$(wait_pidfile "$STATE_DIR/$name.daemon.pid" "$name") \
        || die "$name did not start; see /var/log/slurm/$name.log"
    echo "$pid" > "$STATE_DIR/$name.pid"
    log "$name started (pid $pid)"
}

node_state() {
    sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1 | tr -d '*~#$@+ ' || true
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state resumed=0
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case "$state" in
            idle|mixed|allocated|completing)
                log "node $NODE is $state"
                return 0 ;;
            drain*|down*|fail*)
                if [[ $resumed -eq 0 ]]; then
                    log "node $NODE is $state; resuming it"
                    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                    resumed=1
                fi ;;
        esac
        sleep 0.5
    done
    die "node $NODE not idle after $TIMEOUT s (state '${state:-none}'); see /var/log/slurm/slurmctld.log and slurmd.log"
}

do_stop() {
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    rm -f "$STATE_DIR/slurmctld.daemon.pid" "$STATE_DIR/slurmd.daemon.pid"
    log "stopped"
}

do_start() {
    [[ $EUID -eq 0 ]] || die "must run as root (installs packages and starts system daemons)"
    install_packages
    mkdir -p "$STATE_DIR"

    local cpus memory want_cpus want_memory
    cpus=$(configured_setting cpus)
    memory=$(configured_setting memory)
    want_cpus=${CPUS:-${cpus:-$(nproc)}}
    want_memory=${MEMORY:-$(real_memory_mb)}

    local foreign
    for daemon in slurmctld slurmd; do
        foreign=$(foreign_pids "$daemon")
        [[ -z "$foreign" ]] || die "a $daemon not started by this script is running (pid ${foreign% }); stop it first"
    done

    if daemon_running slurmctld && daemon_running slurmd; then
        if [[ "$cpus" == "$want_cpus" && "$memory" == "$want_memory" ]]; then
            log "already running with cpus=$cpus memory=$memory"
            wait_idle
            return 0
        fi
        log "running with cpus=${cpus:-?} memory=${memory:-?}; restarting with cpus=$want_cpus memory=$want_memory"
    fi
    stop_daemon slurmd
    stop_daemon slurmctld

    prepare_dirs
    write_config "$want_cpus" "$want_memory"
    start_munged
    start_slurm_daemon slurmctld
    start_slurm_daemon slurmd
    wait_idle
    log "up: node $NODE, partition debug, cpus=$want_cpus memory=${want_memory}MB"
}

do_status() {
    local up=1 name pid
    for name in munged slurmctld slurmd; do
        pid=$(recorded_pid "$name")
        if daemon_running "$name"; then
            echo "$name: running (pid $pid, started by this script)"
        elif [[ -n "$(foreign_pids "$name")" ]]; then
            echo "$name: running (pid $(foreign_pids "$name" | xargs), not started by this script)"
            [[ "$name" == munged ]] || up=0
        else
            echo "$name: not running"
            up=0
        fi
    done
    echo "settings: cpus=$(configured_setting cpus) memory=$(configured_setting memory)"
    local state=""
    if [[ $up -eq 1 ]]; then
        state=$(node_state)
        echo "node $NODE: ${state:-unknown}"
        sinfo -o '%P %a %l %D %c %m %T' 2>/dev/null || true
    fi
    case "$state" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 3 ;;
    esac
}

case "$COMMAND" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    restart-controller) stop_daemon slurmctld; start_slurm_daemon slurmctld keep ;;
    status) do_status ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command '$COMMAND' (accepted: start, stop, restart, restart-controller, status)" ;;
esac
