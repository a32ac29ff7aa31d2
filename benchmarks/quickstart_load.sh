#!/usr/bin/env bash
# The README's main command (a smoke search) alone and beside a second training job: with the default threads
# (training processes share the cores) and with --threads 2 for both (each takes every core, as runs did
# before). Parts: new (alone), shared, oversub, workers (alone, --workers 2: two trials at a time); old /
# oldshared / oldworkers run an older checkout put at /tmp/old
# (git worktree add /tmp/old REV). Wall times go to /tmp/qsm/results.txt.
#   bash benchmarks/quickstart_load.sh new shared oversub
set -u
QS="search --space resnet56_channels --dataset digits --budget smoke --quiet"
JOB="train resnet56_channels --dataset digits --epochs 60 --quiet"
run() {  # name, python prefix, extra args for QS, second job args or ""
  local name=$1 pre=$2 extra=$3 job=$4
  rm -rf /tmp/qsm/$name && mkdir -p /tmp/qsm/$name && cd /tmp/qsm/$name
  local jpid=""
  if [ -n "$job" ]; then $pre -m prunenas.cli $JOB $job --out /tmp/qsm/$name/job2 > /tmp/qsm/$name/job2.log 2>&1 & jpid=$!; sleep 3; fi
  local t0=$(date +%s.%N)
  $pre -m prunenas.cli $QS $extra > /tmp/qsm/$name/qs.log 2>&1
  local rc=$?
  local t1=$(date +%s.%N)
  [ -n "$jpid" ] && kill $jpid 2>/dev/null
  wait 2>/dev/null
  echo "$name: rc $rc, $(python -c "print(round($t1-$t0,1))") s, load $(cut -d' ' -f1 /proc/loadavg)" | tee -a /tmp/qsm/results.txt
}
mkdir -p /tmp/qsm; : > /tmp/qsm/results.txt
for what in "$@"; do
  case $what in
    old) run old "env PYTHONPATH=/tmp/old python" "" "" ;;
    new) run new "python" "" "" ;;
    shared) run shared "python" "" " " ;;
    oversub) run oversub "python" "--threads 2" "--threads 2" ;;
    oldshared) run oldshared "env PYTHONPATH=/tmp/old python" "" " " ;;
    workers) run workers "python" "--workers 2" "" ;;
    oldworkers) run oldworkers "env PYTHONPATH=/tmp/old python" "--workers 2" "" ;;
  esac
done
