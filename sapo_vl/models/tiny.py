"""The offline tiny Qwen3-VL(-MoE): a real checkpoint directory built locally, no hub, no downloads.

It is what our tests, the CPU demo and the CI run train: the real ``Qwen3VLMoeForConditionalGeneration`` (or the
dense ``Qwen3VLForConditionalGeneration``) with random weights at toy sizes, a byte-level BPE tokenizer trained in
memory (vocabulary about 1k, Qwen chat special tokens, ``<think>``/``</think>``), a Qwen3-VL-style chat template
with image placeholders, and a ``Qwen3VLProcessor``. Everything is written with ``save_pretrained`` and reloads
through ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained`` exactly like a real checkpoint.

Size rules that Qwen3-VL enforces (found by building it): ``mrope_section`` sums to head_dim / 2, the vision
``num_position_embeddings`` is a perfect square, the ``deepstack_visual_indexes`` are below the vision depth and no
more than the text layers, the image processor uses ``patch_size=16`` and images are at least 32x32.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
import torch
from transformers import (AutoModelForImageTextToText, PreTrainedTokenizerFast, Qwen3VLConfig, Qwen3VLMoeConfig,
                          Qwen3VLProcessor)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor


SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# Added as ordinary (non-special) tokens, as Qwen3 does: decoding with skip_special_tokens keeps them, so format
# rewards can see "<think>...</think><answer>...</answer>".
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# Generation must never sample these from a random policy (they would ask for image features that do not exist).
VISION_SPECIAL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

# Qwen3-VL-style chat template: images and videos become <|vision_start|><|image_pad|><|vision_end|>, which the
# processor expands to one pad token per merged patch.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}{{ part['text'] }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

_WORDS = (
    "the a an is are was of to in on at for with and or not what which who how many much color colour "
    "shape user assistant system image picture photo there this that it its show shows answer question "
    "think final number yes no true false red green blue yellow black white gray grey teal brown orange "
    "purple pink cyan magenta circle rectangle triangle square star cross ellipse line dot zero one two "
    "three four five six seven eight nine ten hundred thousand half third quarter plus minus times "
    "divided equals sum product total left right top bottom above below between count def return if else "
    "elif for while import from print range len list dict int str float None True False solve find "
    "compute value let x y z n k sqrt frac boxed pi cos sin log "
).split()


@dataclass
class TinyConfig:
    """Sizes of the tiny model. Defaults: about 0.7M parameters, MoE with 8 experts, top-2."""

    moe: bool = True
    vocab_size: int = 1024
    hidden_size: int = 64
    intermediate_size: int = 128  # dense MLP (dense variant, and mlp_only_layers)
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    num_experts: int = 8
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 32
    router_aux_loss_coef: float = 0.001
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    vision_num_position_embeddings: int = 64  # perfect square
    deepstack_visual_indexes: list[int] = field(default_factory=lambda: [0])
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False  # Qwen3-VL-2B / 4B tie the LM head to the input embeddings
    min_pixels: int = 32 * 32
    max_pixels: int = 128 * 128
    seed: int = 0

    def validate(self) -> None:
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even, got {self.head_dim}")
        side = math.isqrt(self.vision_num_position_embeddings)
        if side * side != self.vision_num_position_embeddings:
            raise ValueError(f"vision_num_position_embeddings must be a perfect square, got "
                             f"{self.vision_num_position_embeddings}")
        bad = [i for i in self.deepstack_visual_indexes if not 0 <= i < self.vision_depth]
        if bad or len(self.deepstack_visual_indexes) > self.num_hidden_layers:
            raise ValueError(f"deepstack_visual_indexes {self.deepstack_visual_indexes} must be < vision_depth "
                             f"({self.vision_depth}) and at most num_hidden_layers ({self.num_hidden_layers})")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError("num_experts_per_tok must be <= num_experts")


def mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies into (temporal, height, width) like Qwen3-VL's [24, 20, 20] of 64."""
    half = head_dim // 2
    h = w = (half * 5) // 16
    return [half - h - w, h, w]


def _corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = [" ".join(_WORDS)]
    for _ in range(3000):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(3, 12))]
        nums = [str(rng.randint(0, 999)) for _ in range(rng.randint(0, 3))]
        punct = rng.choice(["?", ".", "!", ",", ":", " = ", " + ", " - ", " * ", " / ", "(", ")", "{", "}", "^"])
        line = " ".join(words + nums) + punct
        lines.append(line.capitalize() if rng.random() < 0.3 else line)
    return lines


def build_tokenizer(vocab_size: int = 1024, seed: int = 0):
    """Train a byte-level BPE tokenizer in memory and wrap it as a transformers fast tokenizer."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS) - len(REASONING_TOKENS),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=32768,
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_processor(tokenizer, cfg: TinyConfig):
    """A real Qwen3VLProcessor (PIL image processor with patch 16, Qwen3-VL video processor)."""
    common = dict(size={"shortest_edge": cfg.min_pixels, "longest_edge": cfg.max_pixels}, patch_size=16,
                  temporal_patch_size=2, merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return Qwen3VLProcessor(image_processor=Qwen2VLImageProcessorPil(**common), tokenizer=tokenizer,
                            video_processor=Qwen3VLVideoProcessor(**common), chat_template=CHAT_TEMPLATE)


def build_model_config(cfg: TinyConfig, tokenizer):
    """The Qwen3-VL(-MoE) config for the given sizes, with token ids taken from the tokenizer."""
    cfg.validate()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=cfg.tie_word_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                         "mrope_section": mrope_section(cfg.head_dim), "mrope_interleaved": True},
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )
    if cfg.moe:
        text.update(num_experts=cfg.num_experts, num_experts_per_tok=cfg.num_experts_per_tok,
                    moe_intermediate_size=cfg.moe_intermediate_size, decoder_sparse_step=1,
                    router_aux_loss_coef=cfg.router_aux_loss_coef)
    vision = dict(
        depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_intermediate_size,
        num_heads=cfg.vision_num_heads, out_hidden_size=cfg.hidden_size, patch_size=16, spatial_merge_size=2,
        temporal_patch_size=2, num_position_embeddings=cfg.vision_num_position_embeddings,
        deepstack_visual_indexes=list(cfg.deepstack_visual_indexes),
    )
    config_cls = Qwen3VLMoeConfig if cfg.moe else Qwen3VLConfig
    return config_cls(
        text_config=text, vision_config=vision, tie_word_embeddings=cfg.tie_word_embeddings,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
    )


def build_tiny(cfg: TinyConfig | None = None):
    """Build (model, processor) in memory, deterministic by ``cfg.seed``."""
    cfg = cfg or TinyConfig()
    tokenizer = build_tokenizer(cfg.vocab_size, cfg.seed)
    processor = build_processor(tokenizer, cfg)
    config = build_model_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):  # building a model must not disturb the caller's RNG stream
        torch.manual_seed(cfg.seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.bad_words_ids = [[tokenizer.convert_tokens_to_ids(t)] for t in VISION_SPECIAL_TOKENS]
    return model, processor


def make_tiny_model(out_dir: str | Path, cfg: TinyConfig | None = None) -> Path:
    """Build the tiny model and save model + processor to ``out_dir`` (safetensors, HF layout)."""
    cfg = cfg or TinyConfig()
    model, processor = build_tiny(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "sapo_vl_tiny.json").write_text(json.dumps(asdict(cfg), indent=2))
    return out
