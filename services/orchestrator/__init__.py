"""``agegender run``: the whole stack on one machine, four OS processes over ``ipc://``.

The orchestrator starts sink, classifier and detector, waits until each reports ready on
``/readyz``, then starts capture. A watchdog restarts a service that dies (at most
``max_restarts`` within ``restart_window_s``; beyond that it gives up, stops the stack and
exits non-zero) and kills and restarts one that is stalled (no heartbeat, or no progress
while work waits), counts both in ``agegender_process_restarts_total{service}`` and
``agegender_process_stalls_total{service}`` on its own metrics port, shows progress
(frames, fps, faces, p95 latency from the sink's status file; live sources that are not
up, from capture's) and prints a summary at the end (frames, faces, fps, end-to-end
latency p50/p95/p99, drops by stage and reason, scraped from every service's
``/metrics``; per-stream counts, frames lost, sink breaks, sources down, files skipped).
A restarted capture resumes where the last one was, a restarted sink continues its
outputs and counts. With ``--out`` the run owns the folder (:mod:`common.outdir`).

SIGINT/SIGTERM stop every child within 5 s: SIGTERM to each child's process group, then
SIGKILL after a grace period. Children also get SIGTERM from the kernel if the
orchestrator itself dies (``PR_SET_PDEATHSIG``), so no process is left behind.

Modules, in the order a run uses them:

* :mod:`.options`: what to run (:class:`~.options.StackOptions`), service names, exit
  codes, parsing of ``--threads`` and ``--service-arg``;
* :mod:`.wiring`: HTTP ports, ``ipc://`` endpoints and each service's arguments;
* :mod:`.children`: one service process (start, signals, HTTP, metrics, exit reason);
* :mod:`.watchdog`: restart policy, refusals (exit code 2), giving up, stalled services;
* :mod:`.stalls`: when a running service is stalled (heartbeat, progress while work waits);
* :mod:`.stack`: the four children together: start order, shutdown, status, summary;
* :mod:`.runner`: :func:`~.runner.run_stack`, the loop with progress and source states;
* :mod:`.summary`: metrics scraping and the printed summary;
* :mod:`.command`: the ``agegender run`` click command.
"""
