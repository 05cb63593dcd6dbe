"""Print the benchmark's figures, with ratios to the design targets."""

from __future__ import annotations

from typing import Any

REPLACEMENT_TARGET_S = 2.0
CALLS_SHOWN = 12


def _ms(stat: dict[str, float]) -> str:
    return (
        f"{stat['median'] * 1000:7.0f} ms  "
        f"(min {stat['min'] * 1000:.0f}, max {stat['max'] * 1000:.0f}, n={stat['n']:.0f})"
    )


def _latency(latency: dict[str, Any], replicas: int) -> None:
    apply = latency["apply"]
    print(f"\napply → pods: one InferenceService, {replicas} replicas, idle operator")
    print(f"  first worker pod created     {_ms(apply['first_pod_s'])}")
    print(f"  all {replicas} pods created         {_ms(apply['all_created_s'])}")
    print(f"  all {replicas} pods Ready (KWOK)    {_ms(apply['all_ready_s'])}")
    print(f"  condition Ready on the object {_ms(apply['service_ready_s'])}")
    print(
        f"\nfailure → replacement (target: created < {REPLACEMENT_TARGET_S:.0f} s "
        "after the failure is seen)"
    )
    for kind, stats in latency["failures"].items():
        seen = stats["seen_to_created_s"]
        ratio = seen["max"] / REPLACEMENT_TARGET_S
        print(f"  {kind:<10} seen → created   {_ms(seen)}  worst = {ratio:.2f} x target")
        print(f"  {'':<10} created → Ready  {_ms(stats['created_to_ready_s'])}")
    print(f"  operator log: {latency['operator_log']}")


def _calls(calls: dict[str, dict[str, float]]) -> None:
    for call, row in list(calls.items())[:CALLS_SHOWN]:
        conflicts = f"  ({row['conflicts']:.0f} answered 409)" if row["conflicts"] else ""
        print(
            f"    {row['n']:7.0f}  {call:<32} {row['mean_ms']:6.1f} ms mean in the API server"
            + conflicts
        )


def _scale(result: dict[str, Any]) -> None:
    n, r = result["services"], result["replicas"]
    total = n * r
    ramp, done, steady = (
        result["ramp_to_created"],
        result["ramp_to_services_ready"],
        result["steady"],
    )
    print(f"\nscale: {n} InferenceServices x {r} replicas, operator on one core (taskset -c 0)")
    print(f"  {n} applies sent in            {result['apply_loop_s']:6.1f} s")
    shares = ", ".join(f"{q} {t:.1f} s" for q, t in result["created_quantiles_s"].items())
    print(f"  pods created after             {shares}")
    print(f"  all {total} pods created after    {result['all_created_s']:6.1f} s")
    print(f"  all {total} pods Ready after      {result['all_ready_s']:6.1f} s")
    print(f"  all {n} objects Ready after     {result['all_services_ready_s']:6.1f} s")
    print(f"  pods created beyond {total}:       {result['extra_pods_created']}")
    print(
        f"  operator CPU to {total} created:   {ramp['cpu_s']:6.1f} s "
        f"({ramp['cpu_percent']:.0f} % of one core over {ramp['wall_s']:.1f} s)"
    )
    print(
        f"  operator CPU to all Ready:     {done['cpu_s']:6.1f} s "
        f"({done['cpu_percent']:.0f} % of one core over {done['wall_s']:.1f} s)"
    )
    print(
        f"  steady state:                  {steady['cpu_percent']:6.1f} % of one core "
        f"({steady['cpu_s']:.1f} s CPU in {steady['wall_s']:.0f} s)"
    )
    for label, rec in (
        ("ramp", result["reconciles_ramp"]),
        ("steady", result["reconciles_steady"]),
    ):
        print(
            f"  reconciles ({label}):           {rec['reconciles']:.0f} ok, "
            f"{rec['reconcile_errors']:.0f} failed, mean {rec['mean_reconcile_ms']:.1f} ms wall"
        )
    print(
        f"  RSS: idle {result['rss_idle_mib']:.0f} MiB, steady {result['rss_steady_mib']:.0f} MiB,"
        f" peak {result['rss_peak_mib']:.0f} MiB"
    )
    for label in ("ramp", "steady"):
        shares = ", ".join(
            f"{name} {pct:.0f} %" for name, pct in result[f"components_cpu_percent_{label}"].items()
        )
        print(f"  cluster CPU ({label}, % of one core): {shares}")
    print("  API calls until all Ready (all clients; see apimetrics.py):")
    _calls(result["api_calls_ramp"])
    queued = ", ".join(
        f"{level} {row['n']:.0f} waited {row['mean_ms']:.1f} ms"
        for level, row in result["api_queued_ramp"].items()
    )
    print(f"  API Priority and Fairness queues until all Ready: {queued}")
    print(f"  API calls in the steady {steady['wall_s']:.0f} s:")
    _calls(result["api_calls_steady"])
    for trial in result["failures_at_scale"]:
        ratio = trial["seen_to_created_s"] / REPLACEMENT_TARGET_S
        print(
            f"  gpu-fault at scale: seen → created {trial['seen_to_created_s'] * 1000:.0f} ms "
            f"({ratio:.2f} x target), → Ready {trial['created_to_ready_s'] * 1000:.0f} ms"
        )
    print(f"  operator log: {result['operator_log']}")
    for phase, profile in result.get("profile", {}).items():
        packages = ", ".join(f"{name} {100 * share:.0f} %" for share, name in profile["by_package"])
        print(f"  py-spy, {phase} ({profile['samples']} busy samples); self time by package:")
        print(f"    {packages}")
        print("    functions on the stack in most busy samples:")
        for share, function in profile["functions"]:
            print(f"    {100 * share:5.1f} %  {function}")


def print_report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    load = ", ".join(f"{x:.1f}" for x in machine["loadavg_start"])
    print(f"\nmachine: {machine['cpus']} CPUs, load average at start {load}")
    replicas = results["settings"]["replicas"]
    if "latency" in results:
        _latency(results["latency"], replicas)
    if "scale" in results:
        _scale(results["scale"])
    print(f"\nelapsed {results['elapsed_s']:.0f} s")
