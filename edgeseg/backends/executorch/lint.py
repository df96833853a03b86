"""ExecuTorch lint: read the .pte's execution plan (no runtime needed) for what runs where: each delegate call (a
partition handed to XNNPACK / Core ML / Vulkan) and each kernel call left to ExecuTorch's portable kernels, the
tensor ranks and static shapes. Delegated node counts are not in the .pte (a delegate's payload is its own
format): ``edgeseg export`` records them from the edge program in the manifest's ``delegation``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edgeseg.backends.executorch.runtime import import_executorch, read_program_bytes
from edgeseg.errors import EdgesegError
from edgeseg.lint import LintReport, RuleSet

# ExecuTorch's delegate ids -> edgeseg's accelerator names
DELEGATE_IDS = {"XnnpackBackend": "xnnpack", "CoreMLBackend": "coreml", "VulkanBackend": "vulkan"}
# kernel calls that only hand tensors around (no compute): not counted as work left off the delegate
_BOOKKEEPING = frozenset({"aten::view_copy", "executorch_prim::et_view", "aten::_reshape_alias_copy"})


@dataclass
class PlanSummary:
    """The forward method's execution plan: delegate calls by delegate, kernel calls by op."""

    delegate_calls: Counter = field(default_factory=Counter)  # accelerator -> partitions
    kernel_calls: Counter = field(default_factory=Counter)  # "aten::expand_copy" -> count
    max_rank: int = 0
    dynamic: list[str] = field(default_factory=list)

    @property
    def compute_left(self) -> dict[str, int]:
        return {op: n for op, n in sorted(self.kernel_calls.items()) if op not in _BOOKKEEPING}


def read_plan(path: Path) -> PlanSummary:
    """The execution plan of ``path`` (one line error for a file that is not a readable .pte)."""
    data = read_program_bytes(path)
    import_executorch()
    from executorch.exir import schema
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        program = deserialize_pte_binary(data).program
        (plan,) = [p for p in program.execution_plan if p.name == "forward"]
    except Exception as exc:
        why = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise EdgesegError(f"cannot read ExecuTorch program {path}: {why} (re-export it with edgeseg export)") from None
    out = PlanSummary()
    for chain in plan.chains:
        for ins in chain.instructions:
            args = ins.instr_args
            if isinstance(args, schema.DelegateCall):
                backend_id = plan.delegates[args.delegate_index].id
                out.delegate_calls[DELEGATE_IDS.get(backend_id, backend_id)] += 1
            elif isinstance(args, schema.KernelCall):
                op = plan.operators[args.op_index]
                out.kernel_calls[op.name] += 1
    for i, value in enumerate(plan.values):
        tensor = value.val
        if isinstance(tensor, schema.Tensor):
            out.max_rank = max(out.max_rank, len(tensor.sizes))
            if tensor.shape_dynamism != schema.TensorShapeDynamism.STATIC:
                out.dynamic.append(f"value#{i}")
    return out


def lint_executorch(path: Path, rs: RuleSet, delegate: str, delegation: dict | None = None) -> LintReport:
    """Partitions per delegate, ops left to the portable kernels (warnings: each one runs outside the delegate and
    costs a hand-over between partitions), tensor ranks, static shapes. ``delegation`` (the manifest's, from the
    edge program) adds the delegated node counts."""
    plan = read_plan(path)
    report = LintReport(rs.name)
    for accel, n in plan.delegate_calls.items():
        report.ops[f"delegate:{accel}"] = n
    for op, n in plan.kernel_calls.items():
        report.ops[op] = n
    report.max_rank = plan.max_rank
    if plan.max_rank > rs.max_rank:
        report.add("error", "max-rank", "program", f"a tensor is {plan.max_rank}-D (max {rs.max_rank})")
    for name in plan.dynamic[:5]:
        report.add("error", "static-shape", name, "tensor has a dynamic shape")
    if not plan.delegate_calls.get(delegate):
        report.add(
            "error",
            "not-delegated",
            delegate,
            f"nothing is delegated to {delegate}: the program runs on ExecuTorch's portable kernels",
        )
    left = plan.compute_left
    counts = f" ({delegation['nodes_delegated']}/{delegation['nodes_total']} nodes delegated)" if delegation else ""
    if left:
        listed = ", ".join(f"{op} x{n}" for op, n in left.items())
        report.add("warning", "not-delegated-ops", delegate, f"run on ExecuTorch's portable kernels{counts}: {listed}")
    partitions = plan.delegate_calls.get(delegate, 0)
    if partitions > 1:
        report.add(
            "warning",
            "delegate-partitions",
            delegate,
            f"{partitions} {delegate} partitions: each boundary "
            "hands tensors between the delegate and the portable kernels",
        )
    return report
