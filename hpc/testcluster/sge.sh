#!/usr/bin/env bash
# A real single-node Son of Grid Engine (SGE 8.1.9) test cluster for matdx tests.
#
# Usage:
#   bash hpc/testcluster/sge.sh start   [--slots N] [--no-install] [--timeout S]
#   bash hpc/testcluster/sge.sh stop
#   bash hpc/testcluster/sge.sh restart [--slots N] [--no-install] [--timeout S]
#   bash hpc/testcluster/sge.sh status
#
# start    installs gridengine-master/-exec/-client from Debian when missing (debconf
#          preseeded, no prompts), starts sge_qmaster, configures the cluster (root may
#          run jobs, 1 s scheduling, immediate accounting, queue all.q with N slots,
#          parallel environment smp) and starts sge_execd, without systemd; it waits
#          until all.q@HOST accepts jobs. Starting a running cluster with the same
#          settings does nothing; with another --slots it reconfigures the queue.
# stop     deletes the cluster's jobs (plain qdel), then stops only the daemons this
#          script started, by the pids it recorded; stopping a stopped cluster is fine.
# status   prints the daemons, the queue and the settings; exits 0 when all.q@HOST
#          accepts jobs, 3 otherwise.
#
# --slots N gives all.q N slots (default: the number of CPUs), so packing with more
# slots than the machine has can be tested. Must run as root. Steps and pitfalls
# follow /work/shared/notes/sge-testcluster.md; the numbers below ("pitfall N") refer
# to its list.
set -euo pipefail

STATE_DIR=${MATDX_SGECLUSTER_STATE:-/run/matdx-sgecluster}
SGE_ROOT=/var/lib/gridengine
SGE_CELL=default
SPOOL=/var/spool/gridengine
PACKAGES=(gridengine-master gridengine-exec gridengine-client db-util)
export SGE_ROOT SGE_CELL

log() { printf '[sge-testcluster] %s\n' "$*" >&2; }
die() { printf '[sge-testcluster] error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
}

# ---------------------------------------------------------------- arguments
COMMAND=${1:-}
[[ -n "$COMMAND" ]] || { usage; exit 2; }
shift
SLOTS=""
INSTALL=1
TIMEOUT=60
value_of() {  # option remaining-arg-count next-arg
    [[ $2 -ge 2 ]] || die "option $1 needs a value"
    printf '%s' "$3"
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --slots) SLOTS=$(value_of "$1" $# "${2:-}"); shift 2 ;;
        --slots=*) SLOTS=${1#*=}; shift ;;
        --timeout) TIMEOUT=$(value_of "$1" $# "${2:-}"); shift 2 ;;
        --timeout=*) TIMEOUT=${1#*=}; shift ;;
        --no-install) INSTALL=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (accepted: --slots N, --timeout S, --no-install)" ;;
    esac
done
is_uint() { [[ "$1" =~ ^[1-9][0-9]*$ ]]; }
[[ -z "$SLOTS" ]] || is_uint "$SLOTS" || die "--slots must be a positive integer, got '$SLOTS'"
is_uint "$TIMEOUT" || die "--timeout must be a positive integer (seconds), got '$TIMEOUT'"

HOST=$(hostname)

# ---------------------------------------------------------------- pid bookkeeping
# A recorded pid counts only while /proc/PID/comm still names the daemon (a recycled
# pid is never signalled) and the process is not a zombie (the daemons fork, and where
# PID 1 does not reap, exited parents linger as zombies).
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

recorded_pid() {  # name -> pid or nothing
    local file="$STATE_DIR/$1.pid"
    if [[ -f "$file" ]]; then cat "$file"; fi
}

daemon_running() {  # name (sge_qmaster|sge_execd): ours and alive
    pid_alive "$(recorded_pid "$1")" "$1"
}

foreign_pids() {  # comm -> pids of live processes with this name that we did not record
    local comm=$1 ours pid
    ours=$(recorded_pid "$comm")
    for pid in $(pgrep -x "$comm" 2>/dev/null || true); do
        [[ "$pid" == "$ours" ]] || is_zombie "$pid" || printf '%s ' "$pid"
    done
}

stop_daemon() {  # name; qmaster's controlled shutdown takes 5-8 s
    local name=$1 pid i
    pid=$(recorded_pid "$name")
    [[ -n "$pid" ]] || return 0
    if pid_alive "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do
            pid_alive "$pid" "$name" || break
            sleep 0.1
        done
        if pid_alive "$pid" "$name"; then
            log "$name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
    fi
    rm -f "$STATE_DIR/$name.pid"
}

wait_pidfile() {  # file comm -> pid once the daemon wrote it and is alive
    local file=$1 comm=$2 i pid
    for ((i = 0; i < 150; i++)); do
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

# ---------------------------------------------------------------- install
host_aliases() {
    # Pitfall 1: the qmaster reverse-resolves 127.0.0.1 to "localhost" while clients call
    # themselves $HOST. SGE's own alias file fixes it without editing /etc/hosts (Slurm
    # shares it); it must be in place before the qmaster starts.
    local common="$SGE_ROOT/$SGE_CELL/common"
    mkdir -p "$common"
    if [[ "$(cat "$common/host_aliases" 2>/dev/null)" != "$HOST localhost" ]]; then
        echo "$HOST localhost" > "$common/host_aliases"
    fi
    if [[ "$(cat "$common/act_qmaster" 2>/dev/null)" != "$HOST" ]]; then
        echo "$HOST" > "$common/act_qmaster"
    fi
    # The qmaster (running as sgeadmin) rewrites act_qmaster when it starts.
    if id sgeadmin >/dev/null 2>&1; then
        chown sgeadmin:sgeadmin "$common/host_aliases" "$common/act_qmaster"
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $INSTALL -eq 1 ]] || die "packages missing and --no-install given: ${missing[*]}"
    log "installing ${missing[*]}"
    preseed_debconf
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${PACKAGES[@]}" >&2
}

preseed_debconf() {
    # The master's postinst runs init_cluster with these answers (cell "default",
    # master $HOST); without them it would prompt.
    local package
    for package in gridengine-common gridengine-client; do
        printf '%s shared/gridengineconfig boolean true\n' "$package"
        printf '%s shared/gridenginecell string %s\n' "$package" "$SGE_CELL"
        printf '%s shared/gridenginemaster string %s\n' "$package" "$HOST"
    done | debconf-set-selections
}

ensure_hostname_resolves() {
    # Step 1 of the notes: append a line only when the hostname does not resolve at all.
    if ! getent hosts "$HOST" >/dev/null; then
        log "hostname $HOST does not resolve; appending '127.0.0.1 $HOST' to /etc/hosts"
        echo "127.0.0.1 $HOST" >> /etc/hosts
    fi
}

ensure_spool() {
    # A wiped spool (but installed packages) needs init_cluster again.
    if [[ ! -d "$SPOOL/spooldb" || ! -f "$SGE_ROOT/$SGE_CELL/common/bootstrap" ]]; then
        log "initialising the cluster spool (init_cluster)"
        /usr/share/gridengine/scripts/init_cluster "$SGE_ROOT" "$SGE_CELL" "$SPOOL/spooldb" \
            sgeadmin >&2
        host_aliases
    fi
}

# ---------------------------------------------------------------- daemons and configuration
qmaster_answers() { qconf -sh >/dev/null 2>&1; }

start_qmaster() {
    if daemon_running sge_qmaster; then
        return 0
    fi
    rm -f "$SPOOL/qmaster/qmaster.pid"
    /usr/sbin/sge_qmaster
    local pid i
    pid=$(wait_pidfile "$SPOOL/qmaster/qmaster.pid" sge_qmaster) \
        || die "sge_qmaster did not start; see $SPOOL/qmaster/messages"
    echo "$pid" > "$STATE_DIR/sge_qmaster.pid"
    for ((i = 0; i < TIMEOUT * 10; i++)); do
        qmaster_answers && break
        sleep 0.1
    done
    qmaster_answers || die "sge_qmaster (pid $pid) does not answer qconf -sh after $TIMEOUT s"
    log "sge_qmaster started (pid $pid)"
}

set_keys() {  # file key value [key value ...]: replace each "key value" line
    local file=$1
    shift
    while [[ $# -gt 0 ]]; do
        if grep -q "^$1[[:space:]]" "$file"; then
            sed -i "s|^$1[[:space:]].*|$1 $2|" "$file"
        else
            echo "$1 $2" >> "$file"
        fi
        shift 2
    done
}

configure() {  # slots
    local slots=$1 dir
    dir=$(mktemp -d)
    # Pitfalls 2, 3, 7: root may submit (set before execd starts), load reports every 10 s,
    # accounting written immediately.
    qconf -sconf global > "$dir/global"
    set_keys "$dir/global" min_uid 0 min_gid 0 load_report_time 00:00:10 \
        reporting_params "accounting=true reporting=false flush_time=00:00:01 joblog=false sharelog=00:00:00 accounting_flush_time=00:00:00"
    qconf -Mconf "$dir/global" >/dev/null 2>&1 || qconf -Mconf "$dir/global" >&2
    # Pitfalls 4, 7: schedule every second, ignore the load of a busy shared machine.
    qconf -ssconf > "$dir/sconf"
    set_keys "$dir/sconf" schedule_interval 0:0:1 flush_submit_sec 1 flush_finish_sec 1 \
        job_load_adjustments NONE load_adjustment_decay_time 0:0:0 queue_sort_method seqno
    qconf -Msconf "$dir/sconf" >&2
    qconf -sh 2>/dev/null | grep -qx "$HOST" || qconf -ah "$HOST" >&2
    qconf -ss 2>/dev/null | grep -qx "$HOST" || qconf -as "$HOST" >&2
    if ! qconf -sel 2>/dev/null | grep -qx "$HOST"; then
        cat > "$dir/exechost" <<EOF
hostname              $HOST
load_scaling          NONE
complex_values        NONE
user_lists            NONE
xuser_lists           NONE
projects              NONE
xprojects             NONE
usage_scaling         NONE
report_variables      NONE
EOF
        qconf -Ae "$dir/exechost" >&2
    fi
    cat > "$dir/smp" <<EOF
pe_name            smp
slots              9999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    \$pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    if qconf -spl 2>/dev/null | grep -qx smp; then
        qconf -Mp "$dir/smp" >&2
    else
        qconf -Ap "$dir/smp" >&2
    fi
    # Pitfalls 4, 5, 6: no load alarm, only the smp PE, the script's #! line is honoured.
    local exists=0
    if qconf -sql 2>/dev/null | grep -qx all.q; then
        exists=1
        qconf -sq all.q > "$dir/all.q"
    else
        qconf -sq > "$dir/all.q"
    fi
    set_keys "$dir/all.q" qname all.q hostlist "$HOST" slots "$slots" pe_list smp \
        load_thresholds NONE shell_start_mode unix_behavior shell /bin/bash
    if [[ $exists -eq 1 ]]; then
        qconf -Mq "$dir/all.q" >&2
    else
        qconf -Aq "$dir/all.q" >&2
    fi
    rm -rf "$dir"
    echo "$slots" > "$STATE_DIR/slots"
}

start_execd() {
    if daemon_running sge_execd; then
        return 0
    fi
    local pidfile
    # The execd names its spool dir after what it resolves itself to (here "localhost").
    rm -f "$SPOOL"/execd/*/execd.pid
    /usr/sbin/sge_execd
    local i pid=""
    for ((i = 0; i < 150; i++)); do
        for pidfile in "$SPOOL"/execd/*/execd.pid; do
            [[ -s "$pidfile" ]] || continue
            pid=$(tr -dc '0-9' < "$pidfile")
            pid_alive "$pid" sge_execd && break 2
            pid=""
        done
        sleep 0.1
    done
    [[ -n "$pid" ]] || die "sge_execd did not start; see $SPOOL/execd/*/messages"
    echo "$pid" > "$STATE_DIR/sge_execd.pid"
    log "sge_execd started (pid $pid)"
}

queue_state() {  # state column of all.q@HOST ("" when it accepts jobs; "-" when not listed)
    local line
    line=$(qstat -f -q "all.q@$HOST" 2>/dev/null | grep "^all.q@" | head -n1) || true
    [[ -n "$line" ]] || { echo "-"; return; }
    # queuename qtype resv/used/tot. load_avg arch [states]
    awk '{ print (NF >= 6) ? $6 : "" }' <<< "$line"
}

wait_ready() {
    local deadline=$((SECONDS + TIMEOUT)) state="-" cleared=0
    while ((SECONDS < deadline)); do
        state=$(queue_state)
        if [[ -z "$state" ]]; then
            log "queue all.q@$HOST accepts jobs"
            return 0
        fi
        if [[ "$state" == *E* && $cleared -eq 0 ]]; then
            log "queue all.q@$HOST is in state $state; clearing it (qmod -cq)"
            qmod -cq "all.q@$HOST" >/dev/null 2>&1 || true
            cleared=1
        fi
        sleep 0.5
    done
    die "queue all.q@$HOST not ready after $TIMEOUT s (state '$state'); see $SPOOL/qmaster/messages"
}

# ---------------------------------------------------------------- commands
do_stop() {
    if daemon_running sge_qmaster; then
        # Pitfall 9: plain qdel (not -f) so the accounting records stay truthful.
        local ids
        ids=$(qstat -u '*' 2>/dev/null | awk 'NR > 2 { print $1 }' | sort -u | xargs)
        if [[ -n "$ids" ]]; then
            log "deleting jobs $ids"
            # shellcheck disable=SC2086
            qdel $ids >/dev/null 2>&1 || true
            sleep 2
        fi
    fi
    stop_daemon sge_execd
    stop_daemon sge_qmaster
    log "stopped"
}

do_start() {
    [[ $EUID -eq 0 ]] || die "must run as root (installs packages and starts system daemons)"
    mkdir -p "$STATE_DIR"
    local daemon foreign
    for daemon in sge_qmaster sge_execd; do
        foreign=$(foreign_pids "$daemon")
        [[ -z "$foreign" ]] || die "a $daemon not started by this script is running (pid ${foreign% }); stop it first"
    done
    ensure_hostname_resolves
    host_aliases
    install_packages
    host_aliases
    ensure_spool

    local configured want
    configured=$(cat "$STATE_DIR/slots" 2>/dev/null || true)
    want=${SLOTS:-${configured:-$(nproc)}}
    if daemon_running sge_qmaster && daemon_running sge_execd && [[ "$configured" == "$want" ]]; then
        log "already running with slots=$want"
        wait_ready
        return 0
    fi
    start_qmaster
    configure "$want"
    start_execd
    wait_ready
    log "up: host $HOST, queue all.q, slots=$want, parallel environment smp"
}

do_status() {
    local up=1 name pid
    for name in sge_qmaster sge_execd; do
        pid=$(recorded_pid "$name")
        if daemon_running "$name"; then
            echo "$name: running (pid $pid, started by this script)"
        elif [[ -n "$(foreign_pids "$name")" ]]; then
            echo "$name: running (pid $(foreign_pids "$name" | xargs), not started by this script)"
        else
            echo "$name: not running"
            up=0
        fi
    done
    echo "settings: slots=$(cat "$STATE_DIR/slots" 2>/dev/null || echo '?')"
    local state="-"
    if [[ $up -eq 1 ]]; then
        state=$(queue_state)
        echo "queue all.q@$HOST: ${state:-ready}"
        qstat -g c 2>/dev/null || true
    fi
    [[ -z "$state" ]] && return 0
    return 3
}

case "$COMMAND" in
    start) do_start ;;
    stop) do_stop ;;
    restart) do_stop; do_start ;;
    status) do_status ;;
    -h|--help|help) usage ;;
    *) usage; die "unknown command '$COMMAND' (accepted: start, stop, restart, status)" ;;
esac
