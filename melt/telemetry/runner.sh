# melt job runner: POSIX sh, pushed once to the device and run for every job.
#
#   sh runner.sh JOBDIR        (JOBDIR/job.sh holds the job; melt writes it)
#
# It records the device clock, starts the sampler in the background, marks
# phase boundaries, runs each step of the job with stdout/stderr to files,
# records exit statuses, stops the sampler. Nothing leaves the device while
# the job runs; melt pulls JOBDIR afterwards.
#
# The sampler reads every file with the `read` builtin: no process per file
# per tick. In shells with $EPOCHREALTIME and a fractional `read -t` (mksh,
# Android's sh; bash) it forks nothing at all: it sleeps in `read -t` on a
# FIFO nobody writes to and keeps a fixed schedule. Elsewhere (dash, busybox)
# it reads /proc/uptime (10 ms resolution) and forks one `sleep` per tick.
#
# Files written to JOBDIR:
#   meta       key=value lines: clock, page size, clock ticks, runner pid
#   marks      "TIME NAME" lines (begin, idle_start, idle_end, STEP_start ...)
#   samples    F TIME FAST... RSS_PAGES      (every tick)
#              S TIME SLOW... CPU_JIFFIES*8  (every MELT_SLOW_EVERY ticks)
#              H TIME PID VMHWM_KB           (about once a second)
#              C TIME UTIME STIME CUTIME CSTIME TICKS  (sampler cost, at the end)
#   out.N err.N status.N   per step
#   markdata   output of MELT_MARK_CMD at each mark (energy counters), then uptime=
#   markfiles  "TIME MARK FILE VALUE" for each of MELT_MARK_FILES at each mark
#   aux        output of MELT_AUX_CMD (tegrastats), started at begin
#   truth      "TIME JOULES" lines of the virtual phone's truth log (MELT_TRUTH)
#              over the job, on the runner's clock
#   after      output of MELT_AFTER_CMD (melt's health snapshot), run after the steps
#
# With MELT_PACK=1 the output files are packed into JOBDIR.tar at the end and
# "melt-packed" is printed, so the host pulls one file.

D=$1
[ -d "$D" ] || { echo "melt runner: no job folder $D" >&2; exit 2; }
. "$D/job.sh" || { echo "melt runner: cannot read $D/job.sh" >&2; exit 2; }

if [ -n "${EPOCHREALTIME:-}" ]; then MELT_CLOCK=realtime; else MELT_CLOCK=uptime; fi

melt_now() {
  if [ "$MELT_CLOCK" = realtime ]; then
    T=$EPOCHREALTIME
    case $T in *,*) T=${T%,*}.${T#*,} ;; esac
  else
    read -r T _ < /proc/uptime
  fi
}

mark() {
  melt_now
  echo "$T $1" >> "$D/marks"
  if [ -n "${MELT_MARK_CMD:-}" ]; then
    # uptime before the counters dates the mark on their clock; the one after bounds the read
    { echo "@ $T $1"; read -r up _ < /proc/uptime; echo "uptime_before=$up"; eval "$MELT_MARK_CMD"
      read -r up _ < /proc/uptime; echo "uptime=$up"; } >> "$D/markdata" 2>/dev/null
  fi
  if [ -n "${MELT_MARK_FILES:-}" ]; then  # battery status, charger online: builtin reads only
    for f in $MELT_MARK_FILES; do v=; read -r v < "$f"; echo "$T $1 $f $v"; done >> "$D/markfiles" 2>/dev/null
  fi
}

melt_strip0() {  # "000123" -> "123", "000" -> "0"
  Z=${1#"${1%%[!0]*}"}
  Z=${Z:-0}
}

melt_sampler() {
  exec 2>/dev/null </dev/null
  exec 4>>"$D/samples"
  fast=${MELT_FAST:-}
  slow=${MELT_SLOW:-}
  every=${MELT_SLOW_EVERY:-5}
  hwm_every=${MELT_HWM_EVERY:-50}
  period=${MELT_PERIOD_US:-20000}
  nofork=
  if [ "$MELT_CLOCK" = realtime ] && mkfifo "$D/tick" && exec 3<>"$D/tick"; then
    nofork=1
  fi
  ps=$((period / 1000000))
  melt_strip0 "$((period % 1000000 + 1000000))"
  sleep_s=$ps.${Z#1}
  i=0 pid= s0= next=0 hwm= last=
  while [ -z "$last" ]; do
    # one more tick after the stop request, so the samples outlast the last mark
    [ -e "$D/stop" ] && last=1
    melt_now
    if [ $((i % every)) -eq 0 ]; then
      read -r pid < "$D/pid"
    fi
    line="F $T"
    for f in $fast; do
      v=
      read -r v < "$f"
      line="$line ${v:-NA}"
    done
    r=
    [ -n "$pid" ] && read -r _ r _ < "/proc/$pid/statm"
    echo "$line ${r:-NA}" >&4
    if [ $((i % every)) -eq 0 ]; then
      line="S $T"
      for f in $slow; do
        v=
        read -r v < "$f"
        line="$line ${v:-NA}"
      done
      read -r _ c1 c2 c3 c4 c5 c6 c7 c8 _ < /proc/stat
      echo "$line $c1 $c2 $c3 $c4 $c5 $c6 $c7 $c8" >&4
    fi
    if [ -n "$pid" ] && [ $((i % hwm_every)) -eq 0 ]; then
      hwm=
      while read -r k v _; do
        case $k in VmHWM:) hwm=$v; break ;; esac
      done < "/proc/$pid/status"
      [ -n "$hwm" ] && echo "H $T $pid $hwm" >&4
    fi
    i=$((i + 1))
    [ -n "$last" ] && break
    if [ -n "$nofork" ]; then
      sec=${T%.*}
      melt_strip0 "${T#*.}"
      [ -n "$s0" ] || { s0=$sec; next=$Z; }
      if [ $((sec - s0)) -gt 1000 ]; then  # keep 32-bit shell arithmetic in range
        s0=$((s0 + 1000)); next=$((next - 1000000000))
      fi
      now=$(( (sec - s0) * 1000000 + Z ))
      next=$((next + period))
      d=$((next - now))
      if [ "$d" -gt 0 ]; then
        melt_strip0 "$((d % 1000000 + 1000000))"
        read -r -t "$((d / 1000000)).${Z#1}" _ <&3
      elif [ "$d" -lt $((-5 * period)) ]; then
        next=$now  # fell far behind: start a fresh schedule, no burst
      fi
    else
      sleep "$sleep_s"
    fi
  done
  melt_now
  read -r _ _ _ _ _ _ _ _ _ _ _ _ _ u s cu cs _ < /proc/self/stat
  echo "C $T $u $s $cu $cs $i" >&4
  exec 3>&- 4>&-
}

melt_kill() {  # SIG PID: the process group when the step has its own, else the process
  kill "-$1" -- "-$2" 2>/dev/null || kill "-$1" "$2" 2>/dev/null
}

melt_abort() {
  trap '' INT TERM HUP
  [ -n "${cpid:-}" ] && melt_kill TERM "$cpid"
  [ -n "${wpid:-}" ] && kill -TERM "$wpid" 2>/dev/null
  mark aborted
  : > "$D/stop"
  [ -n "${spid:-}" ] && wait "$spid" 2>/dev/null
  [ -n "${apid:-}" ] && kill -TERM "$apid" 2>/dev/null
  [ -n "${cpid:-}" ] && melt_kill KILL "$cpid"
  exit 130
}

# melt_step N PHASE TIMEOUT_S [K=V ...] -- ARGV...
melt_step() {
  n=$1 phase=$2 limit=$3
  shift 3
  mark "${phase}_start"
  (
    while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do export "$1"; shift; done
    shift
    exec $MELT_SETSID "$@"
  ) > "$D/out.$n" 2> "$D/err.$n" < /dev/null &
  cpid=$!
  echo "$cpid" > "$D/pid"
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$limit" & s=$!
    wait "$s"
    echo timeout > "$D/timeout.$n"
    melt_kill TERM "$cpid"
    sleep 2
    melt_kill KILL "$cpid"
  ) > /dev/null 2>&1 < /dev/null &
  wpid=$!
  wait "$cpid"
  rc=$?
  kill -TERM "$wpid" 2>/dev/null
  wait "$wpid" 2>/dev/null
  mark "${phase}_end"
  [ -n "$MELT_SETSID" ] && melt_kill TERM "$cpid"  # what the step left running
  echo "$rc" > "$D/status.$n"
  echo > "$D/pid"
  cpid= wpid=
}

# each step in its own session and process group (setsid execs in place:
# the step's pid stays the inference process's), so a stop reaches its children
MELT_SETSID=
command -v setsid > /dev/null 2>&1 && MELT_SETSID=setsid
rm -f "$D/stop" "$D/marks" "$D/samples" "$D/markdata" "$D/markfiles" "$D/tick"
: > "$D/pid"
pagesize=$(getconf PAGESIZE 2>/dev/null || getconf PAGE_SIZE 2>/dev/null)
clk=$(getconf CLK_TCK 2>/dev/null)
{
  echo "clock=$MELT_CLOCK"
  echo "pagesize=${pagesize:-4096}"
  echo "clk_tck=${clk:-100}"
  echo "runner_pid=$$"
} > "$D/meta"
echo "$$" > "$D/runner.pid"
trap melt_abort INT TERM HUP

mark begin
T_BEGIN=$T
if [ -n "${MELT_AUX_CMD:-}" ]; then
  ( eval "exec $MELT_AUX_CMD" ) > "$D/aux" 2>/dev/null < /dev/null &
  apid=$!
fi
melt_sampler &
spid=$!
n=0
while [ ! -s "$D/samples" ] && [ "$n" -lt 500 ]; do  # the first sample precedes every phase
  sleep 0.01 2>/dev/null || sleep 1
  n=$((n + 1))
done
if [ -n "${MELT_IDLE_S:-}" ] && [ "$MELT_IDLE_S" != 0 ]; then
  mark idle_start
  sleep "$MELT_IDLE_S"
  mark idle_end
fi
melt_steps
mark end
if [ -n "${MELT_TAIL_S:-}" ] && [ "$MELT_TAIL_S" != 0 ]; then
  sleep "$MELT_TAIL_S"  # a slow fuel gauge refreshes once more after the last phase
fi
: > "$D/stop"
wait "$spid"
[ -n "${apid:-}" ] && { kill -TERM "$apid" 2>/dev/null; wait "$apid" 2>/dev/null; }
if [ -n "${MELT_AFTER_CMD:-}" ]; then
  ( eval "$MELT_AFTER_CMD" ) > "$D/after" 2>/dev/null < /dev/null
fi
if [ -n "${MELT_TRUTH:-}" ] && [ -r "$MELT_TRUTH" ]; then
  # the truth log's columns: boottime_s (1, what /proc/uptime counts), realtime_s (3)
  melt_now
  col=3
  [ "$MELT_CLOCK" = uptime ] && col=1
  i=0  # the model writes its log a tick behind: wait until it covers the end
  while [ $i -lt 50 ] && ! tail -n 1 "$MELT_TRUTH" | awk -F, -v b="$T" -v c="$col" '{ exit !($c >= b) }'; do
    sleep 0.02 2>/dev/null || sleep 1
    i=$((i + 1))
  done
  awk -F, -v a="$T_BEGIN" -v b="$T" -v c="$col" \
    'NR > 1 && $c >= a - 1 && $c <= b + 1 { print $c, $4 }' "$MELT_TRUTH" > "$D/truth" 2>/dev/null
fi
echo "melt-runner done"
if [ "${MELT_PACK:-}" = 1 ]; then
  # everything but the inputs and control files, in one file for one pull
  ( cd "$D" && tar -cf "$D.tar" $(ls | grep -v -x -E 'job\.sh|tick|stop|pid') ) 2>/dev/null \
    && echo "melt-packed"
fi
exit 0
