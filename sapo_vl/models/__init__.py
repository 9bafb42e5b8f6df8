"""Policy models: loading (HF way), the offline tiny Qwen3-VL(-MoE), chunked log-probs, MoE router statistics."""

from sapo_vl.models.load import freeze_vision_tower, is_moe, load_policy, load_processor, resolve_dtype
from sapo_vl.models.logprobs import PolicyForward, policy_forward, token_logprobs

__all__ = [
           "PolicyForward",
           "freeze_vision_tower",
           "is_moe",
           "load_policy",
           "load_processor",
           "policy_forward",
           "resolve_dtype",
           "token_logprobs",
]
