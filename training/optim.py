"""AdamW for the CPU without torch.compile's machinery.

Every `torch.optim` optimizer imports `torch._dynamo` the first time it is built and the first time it steps
(its `add_param_group` and `step` are wrapped to keep dynamo out of them), which costs 1.2 s on a quiet
2-core box and 2-3 s on a busy one: a large share of a short CPU run, for a compiler the CPU path never uses.
`PlainAdamW` is the same algorithm in plain tensor operations, in the order `torch.optim.AdamW`'s default CPU
path (`foreach=False`, `fused=False`) performs them, so it gives the same weights to the last bit (tested), and
its `state_dict` has `torch.optim.AdamW`'s layout: a checkpoint trained on the CPU resumes on a GPU under the
fused `torch.optim.AdamW`, and the other way round.
"""

from __future__ import annotations

from typing import Any

import torch

# What torch.optim.AdamW(..., fused=False) keeps in each parameter group beside lr, betas and weight_decay (its
# state_dict lists them); the last four choose an implementation, and a loaded state never changes them.
TORCH_GROUP_DEFAULTS = {"eps": 1e-8, "amsgrad": False, "maximize": False, "decoupled_weight_decay": True,
                        "foreach": None, "capturable": False, "differentiable": False, "fused": False}
IMPLEMENTATION = ("foreach", "capturable", "differentiable", "fused")


class PlainAdamW:
    """torch.optim.AdamW(groups, lr, betas, weight_decay) as its single-tensor CPU path computes it."""

    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], weight_decay: float = 0.01,
                 eps: float = 1e-8):
        defaults = {"lr": lr, "betas": betas, "weight_decay": weight_decay, **TORCH_GROUP_DEFAULTS, "eps": eps}
        self.param_groups = [{**defaults, **group, "params": list(group["params"])} for group in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            lr, (beta1, beta2), decay, eps = group["lr"], group["betas"], group["weight_decay"], group["eps"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state.get(param)
                if state is None:
                    state = self.state[param] = {
                        "step": torch.tensor(0.0, dtype=torch.float32),
                        "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
                state["step"] += 1
                if decay != 0:
                    param.mul_(1 - lr * decay)
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(eps)
                param.addcdiv_(state["exp_avg"], denom, value=-(lr / bias_correction1))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's layout: parameters numbered in group order, state keyed by those numbers."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            numbers = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": numbers})
        params = [p for group in self.param_groups for p in group["params"]]
        state = {index[id(p)]: dict(self.state[p]) for p in params if p in self.state}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A state_dict of this class or of torch.optim.AdamW (fused, foreach or not, from any device)."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"]) for s, g in zip(saved, self.param_groups)):
            raise ValueError("the optimizer state does not match the model's parameter groups")
        self.state = {}
        for group, saved_group in zip(self.param_groups, saved):
            if saved_group.get("amsgrad") or saved_group.get("maximize"):
                raise ValueError("the optimizer state uses amsgrad or maximize, which this AdamW does not do")
            group.update({k: v for k, v in saved_group.items() if k != "params" and k not in IMPLEMENTATION})
            for param, number in zip(group["params"], saved_group["params"]):
                if number in state_dict["state"]:
                    values = state_dict["state"][number]
                    self.state[param] = {
                        "step": torch.as_tensor(values["step"], dtype=torch.float32).detach().cpu().clone(),
                        "exp_avg": values["exp_avg"].to(device=param.device, dtype=param.dtype).clone(),
                        "exp_avg_sq": values["exp_avg_sq"].to(device=param.device, dtype=param.dtype).clone()}
