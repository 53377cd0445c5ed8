# Background jobs of run-sample.sh and the toy reproductions, at most $JOBS (default 2) at a time.
# Source it, then:
#   run_job COMMAND...   start COMMAND in the background once fewer than $JOBS jobs run
#   wait_jobs            wait for every job started; fails (so set -e stops the script before the next
#                        step reads missing outputs) if any of them failed, after the others have ended
JOBS=${JOBS:-2}
JOB_PIDS=()

run_job() {
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done  # wait_jobs reads each status
  "$@" &
  JOB_PIDS+=($!)
}

wait_jobs() {
  local pid failed=0
  for pid in "${JOB_PIDS[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  JOB_PIDS=()
  if [ "$failed" -gt 0 ]; then echo "error: $failed job(s) failed (their errors are above, or in their logs)" >&2; return 1; fi
}
