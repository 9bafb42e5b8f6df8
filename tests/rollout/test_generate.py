"""Rollout: G sampled completions per prompt, response masks, old log-probs and MoE routing."""

from functools import partialmethod

import pytest
import torch

from sapo_vl.data import build_synthetic_shapes
from sapo_vl.models.load import load_policy
from sapo_vl.models.logprobs import policy_forward
from sapo_vl.models.moe import completion_topk
from sapo_vl.models.tiny import VISION_SPECIAL_TOKENS
from sapo_vl.config import WarmupConfig
from sapo_vl.rollout import generate as generate_module
from sapo_vl.rollout.generate import NEUTRAL_GENERATION, draw
from sapo_vl.rollout import (
    HFEngine,
    PromptFormat,
    SamplingParams,
    collate_prompts,
    generate_completions,
    make_rollout,
    response_mask_from_ids,
    score_rollout,
)
from sapo_vl.warmup import warmup


@pytest.fixture(scope="module")
def warm(tiny_dir):
    """The tiny policy after a short gold-label warm-up: it now stops (EOS) at different positions, or not at all.
    Shared by the tests of this module, which must not change it."""
    model, processor = load_policy(tiny_dir)
    records = build_synthetic_shapes("train", n=16)
    warmup(model, PromptFormat(processor), records, WarmupConfig(steps=7, batch_size=8, lr=1e-2, labels="gold"))
    model.eval()
    return model, processor, records


def _rollout(model, processor, records, *, group_size=4, seed=0, **params):
    """A rollout with its old log-probs and routing, as the training loop makes it."""
    torch.manual_seed(seed)
    engine = HFEngine(model, processor)
    params = SamplingParams(**{"max_new_tokens": 3, "temperature": 1.0, **params})
    ro = make_rollout(engine, PromptFormat(processor), records, group_size, params)
    ro.old_logprobs, ro.routing = score_rollout(model, ro, temperature=params.temperature, micro_batch_size=32)
    return engine, ro


def test_make_rollout_shapes_and_group_layout(warm):
    model, processor, records = warm
    engine, ro = _rollout(model, processor, records[:3], group_size=4)
    N, C = ro.completion_ids.shape
    assert N == 12 and 1 <= C <= 3 and len(ro) == 12
    assert ro.prompt_ids.shape == ro.prompt_mask.shape == ro.prompt_mm_types.shape == (12, ro.prompt_len)
    assert ro.response_mask.shape == ro.old_logprobs.shape == (12, C) and ro.truncated.shape == (12,)
    assert ro.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [r["id"] for r in ro.records] == [records[i // 4]["id"] for i in range(12)]
    assert (ro.prompt_ids == ro.prompt_ids[ro.group_ids * 4]).all()  # one prompt per group, repeated
    single = collate_prompts(PromptFormat(processor), records[:3])
    assert ro.image_keys == [0] * 4 + [1] * 4 + [2] * 4 and ro.images_per_sample == [1] * 12
    assert torch.equal(ro.pixel_values, single.pixel_values)  # each prompt's image once, not G times
    texts = processor.tokenizer.batch_decode(ro.completion_ids, skip_special_tokens=True)
    assert ro.completions == texts and all(isinstance(t, str) for t in texts)


def test_response_mask_covers_up_to_the_first_eos_and_pads_after(warm):
    model, processor, records = warm
    engine, ro = _rollout(model, processor, records[:4], group_size=6, temperature=1.3)
    eos, pad = engine.eos_id, engine.pad_id
    N, C = ro.completion_ids.shape
    stopped = 0
    for i in range(N):
        ids, mask = ro.completion_ids[i], ro.response_mask[i].bool()
        hits = (ids == eos).nonzero().flatten().tolist()
        if ro.truncated[i]:
            assert not hits and mask.all() and C == 3
        else:
            e = hits[0]
            stopped += 1
            assert mask[:e + 1].all() and not mask[e + 1:].any()
            assert (ids[e + 1:] == pad).all()
    assert 0 < stopped < N  # the warm policy both stops and runs out of tokens: both branches are checked
    assert len({int(n) for n in ro.response_mask.sum(1)}) >= 2


def test_response_mask_from_ids_on_hand_built_ids():
    eos = 9
    ids = torch.tensor([[5, 9, 7, 9],  # EOS at 1; the second EOS is after the end
                        [5, 6, 7, 8],  # no EOS: truncated, all tokens count
                        [9, 1, 2, 3],  # EOS first: a one-token response
                        [1, 2, 3, 9]])  # EOS last
    mask, truncated = response_mask_from_ids(ids, eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, True, False, False]


def test_response_mask_from_ids_stops_at_any_of_several_eos_ids():
    ids = torch.tensor([[4, 8, 9, 9], [4, 9, 8, 8], [4, 5, 6, 7]])
    mask, truncated = response_mask_from_ids(ids, [9, 8])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert truncated.tolist() == [False, False, True]


def test_engine_stops_at_every_eos_id_of_the_generation_config(warm, monkeypatch):
    model, processor, _ = warm
    tok = processor.tokenizer
    monkeypatch.setattr(model.generation_config, "eos_token_id", [tok.convert_tokens_to_ids("<|endoftext|>"),
                                                                  tok.convert_tokens_to_ids("<|im_end|>")])
    engine = HFEngine(model, processor)
    assert engine.eos_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert engine.eos_ids == [engine.eos_id, tok.convert_tokens_to_ids("<|endoftext|>")]


@pytest.mark.parametrize("path", ["one prefill per prompt", "generate"])
def test_checkpoint_generation_config_does_not_change_the_sampling_distribution(warm, monkeypatch, path):
    model, processor, records = warm
    if path == "generate":  # the path of models without the shared prefill, and of sharded (synced) ones
        monkeypatch.setattr(HFEngine, "__init__", partialmethod(HFEngine.__init__, shared_prefill=False))
    _, clean = _rollout(model, processor, records[:3], seed=5)
    inputs = collate_prompts(PromptFormat(processor), records[:3]).model_inputs()
    plain = model.generate(**inputs, do_sample=False, max_new_tokens=3)
    for key, value in dict(repetition_penalty=3.0, no_repeat_ngram_size=1, min_new_tokens=3, typical_p=0.5,
                           min_p=0.3).items():  # what a checkpoint's generation_config.json may hold
        monkeypatch.setattr(model.generation_config, key, value)
    assert not torch.equal(model.generate(**inputs, do_sample=False, max_new_tokens=3), plain)  # it would matter
    _, polluted = _rollout(model, processor, records[:3], seed=5)
    assert torch.equal(polluted.completion_ids, clean.completion_ids)
    assert torch.equal(polluted.old_logprobs, clean.old_logprobs)


def test_vision_special_tokens_are_never_sampled(policy):
    model, processor = policy
    records = build_synthetic_shapes("train", n=2)
    vision_ids = [processor.tokenizer.convert_tokens_to_ids(t) for t in VISION_SPECIAL_TOKENS]
    _, ro = _rollout(model, processor, records, group_size=32, max_new_tokens=32, temperature=50.0)
    sampled = ro.completion_ids[ro.response_mask.bool()]
    # near-uniform sampling over the ~1k vocabulary (so about 8 vision tokens expected without suppression)
    assert sampled.numel() > 1500 and len(set(sampled.tolist())) > 600
    assert not torch.isin(sampled, torch.tensor(vision_ids)).any()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_old_logprobs_equal_a_fresh_policy_forward(warm, temperature):
    model, processor, records = warm
    _, ro = _rollout(model, processor, records[:3], temperature=temperature)
    inputs, P = ro.model_inputs()
    with torch.no_grad():
        fresh = policy_forward(model, inputs, P, temperature=temperature).logprobs  # (N, C)
    mask = ro.response_mask.bool()
    assert torch.allclose(ro.old_logprobs[mask], fresh[mask], atol=1e-5)
    assert (ro.old_logprobs[mask] < 0).all()


@pytest.fixture
def multinomial(monkeypatch):
    """The decoding loop draws with ``torch.multinomial``, as ``generate`` does: then its tokens must be generate's,
    token for token (what ``draw`` changes is only how the same distribution is sampled: its own tests)."""
    monkeypatch.setattr(generate_module, "draw", lambda probs: torch.multinomial(probs, num_samples=1).squeeze(1))


def test_draw_samples_each_row_from_its_own_distribution():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0],  # zeros inside and at the end are never drawn
                          [0.0, 0.0, 0.0, 0.0, 1.0],  # all mass on the last entry
                          [1.0, 0.0, 0.0, 0.0, 0.0],
                          [0.2, 0.2, 0.2, 0.2, 0.2],
                          [1e-4, 0.0, 0.0, 0.0, 1 - 1e-4]])
    n = 40_000
    torch.manual_seed(0)
    drawn = draw(probs.repeat(n, 1)).view(n, len(probs))  # (n, R)
    counts = torch.stack([torch.bincount(drawn[:, r], minlength=5) for r in range(len(probs))]).double()  # (R, 5)
    assert torch.equal(counts[probs == 0], torch.zeros_like(counts[probs == 0]))
    expected = probs.double() * n
    sigma = (expected * (1 - probs.double())).sqrt()
    assert ((counts - expected).abs() <= 5 * sigma + 1e-9).all(), counts  # binomial: 5 sigma
    assert counts[4, 0] > 0  # a 1e-4 entry is drawn (about 4 times in 40k)
    torch.manual_seed(0)
    assert torch.equal(draw(probs.repeat(n, 1)).view(n, len(probs)), drawn)  # seeded like torch.multinomial


def test_draw_handles_unnormalised_rows_and_a_real_vocabulary():
    torch.manual_seed(1)
    scores = torch.randn(64, 151_936) * 3  # Qwen3-VL's vocabulary size
    scores[:, 151_000:] = -float("inf")
    probs = torch.softmax(scores, -1)
    tokens = draw(probs)
    assert tokens.shape == (64,) and tokens.dtype == torch.long and (tokens < 151_000).all()
    assert torch.equal(draw(torch.tensor([[2.0, 0.0, 6.0]]).expand(10_000, 3)).bincount(minlength=3)[1],
                       torch.tensor(0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_draw_refuses_a_row_that_is_not_a_distribution_naming_it(bad):
    probs = torch.full((3, 5), 0.2)
    probs[1, 2] = bad
    with pytest.raises(ValueError, match="row 1 of the next-token probabilities"):
        draw(probs)
    with pytest.raises(ValueError, match="row 0"):
        draw(torch.zeros(2, 5))  # every token masked


def _generate_kwargs(engine, params: SamplingParams, n: int) -> dict:
    """What ``generate`` is asked for today's path: n samples per prompt, the engine's stop and suppressed ids."""
    kw = dict(NEUTRAL_GENERATION, max_new_tokens=params.max_new_tokens, do_sample=params.do_sample,
              eos_token_id=engine.eos_ids, pad_token_id=engine.pad_id, suppress_tokens=engine.suppress,
              num_return_sequences=n if params.do_sample else 1)
    if params.do_sample:
        kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    return kw


@pytest.mark.parametrize("params", [SamplingParams(6, 1.0), SamplingParams(6, 0.7, top_p=0.9, top_k=40),
                                    SamplingParams(6, 0.0)], ids=["sample", "top-k-top-p", "greedy"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused-decoding", "layer-calls"])
def test_one_prefill_per_prompt_draws_the_tokens_generate_draws(warm, params, fused, multinomial):
    model, processor, records = warm
    engine, n = HFEngine(model, processor, fused_decoding=fused), 5
    prompts = collate_prompts(PromptFormat(processor), records[:4])
    batch_sizes = []
    hook = model.model.language_model.register_forward_hook(
        lambda module, args, kwargs, out: batch_sizes.append(out.last_hidden_state.shape[0]), with_kwargs=True)
    torch.manual_seed(7)
    try:
        shared = engine.generate(prompts, params, n)  # (4 * n, C)
    finally:
        hook.remove()
    copies = n if params.do_sample else 1  # greedy: one completion per prompt, repeated
    assert batch_sizes[0] == 4  # the prefill: one row per prompt
    # then each new token: through the text model (4 x copies rows), or fused, without calling it
    assert set(batch_sizes[1:]) == (set() if fused else {4 * copies})
    assert len(batch_sizes) > 1 or fused
    inputs = prompts.model_inputs(keyed=False)
    torch.manual_seed(7)
    seq = model.generate(**inputs, **_generate_kwargs(engine, params, n))[:, inputs["input_ids"].shape[1]:]
    expected = seq if params.do_sample else seq.repeat_interleave(n, 0)
    assert torch.equal(shared, expected)
    if params.do_sample:  # the warm policy stops early on some rows: what follows an EOS was compared too
        assert torch.isin(shared[:, :-1], torch.tensor(engine.eos_ids)).any()


@pytest.mark.parametrize("fused", [True, False], ids=["fused-decoding", "layer-calls"])
def test_one_prefill_per_prompt_matches_generate_on_left_padded_text_only_prompts(warm, fused, multinomial):
    model, processor, _ = warm
    engine, params = HFEngine(model, processor, fused_decoding=fused), SamplingParams(6, 1.0)
    records = [{"id": str(i), "prompt": "What is 2 + 2?" + " Be brief." * i, "answer": "4"} for i in range(3)]
    prompts = collate_prompts(PromptFormat(processor), records)
    assert len(set(prompts.attention_mask.sum(1).tolist())) == 3 and "image_grid_thw" not in prompts.model_inputs()
    torch.manual_seed(2)
    shared = engine.generate(prompts, params, 4)
    inputs = prompts.model_inputs(keyed=False)
    torch.manual_seed(2)
    seq = model.generate(**inputs, **_generate_kwargs(engine, params, 4))[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(shared, seq)


def test_old_logprobs_equal_the_log_softmax_of_generate_logits(warm, multinomial):
    model, processor, records = warm
    engine, ro = _rollout(model, processor, records[:3], temperature=1.0, seed=3)
    inputs = collate_prompts(PromptFormat(processor), records[:3]).model_inputs(keyed=False)
    torch.manual_seed(3)  # generate itself, on the same prompts and seed, draws the rollout's tokens...
    out = model.generate(**inputs, **_generate_kwargs(engine, SamplingParams(3, 1.0), 4), output_logits=True,
                         return_dict_in_generate=True)
    C = ro.completion_ids.shape[1]
    mask = ro.response_mask.bool()
    assert torch.equal(out.sequences[:, inputs["input_ids"].shape[1]:][mask], ro.completion_ids[mask])
    logits = torch.stack(out.logits, 1)[:, :C]  # (N, C, V) raw logits
    from_generate = torch.log_softmax(logits.float(), -1).gather(-1, ro.completion_ids[..., None])[..., 0]
    assert torch.allclose(ro.old_logprobs[mask], from_generate[mask], atol=1e-5)  # ...and they score them


def test_routing_records_one_expert_set_per_token_and_layer_matching_a_fresh_forward(warm):
    model, processor, records = warm
    _, ro = _rollout(model, processor, records[:2], group_size=3)
    cfg = model.config.text_config
    N, C = ro.completion_ids.shape
    assert ro.routing.shape == (N, ro.prompt_len + C, cfg.num_hidden_layers, cfg.num_experts_per_tok)
    assert ro.routing.dtype == torch.int8  # 8 experts: a byte per (token, layer, slot)
    topk = ro.routing[:, ro.prompt_len:][ro.response_mask.bool()].long().sort(-1).values  # (tokens, L, k)
    assert (topk >= 0).all() and (topk < cfg.num_experts).all()
    assert (topk[..., 1:] > topk[..., :-1]).all()  # distinct experts, sorted
    inputs, P = ro.model_inputs()
    with torch.no_grad():
        out = policy_forward(model, inputs, P)
    fresh = completion_topk(out.router_logits, N, P, cfg.num_experts_per_tok)
    assert torch.equal(fresh[ro.response_mask.bool()].long(), topk)


def test_generate_completions_returns_n_strings_per_record(warm):
    model, processor, records = warm
    engine, fmt, params = HFEngine(model, processor, batch_size=4), PromptFormat(processor), SamplingParams(3, 1.0)
    torch.manual_seed(1)
    out = generate_completions(engine, fmt, records[:5], params, n=3)
    assert len(out) == 5 and all(len(c) == 3 and all(isinstance(s, str) for s in c) for c in out)
    torch.manual_seed(1)
    assert generate_completions(engine, fmt, records[:5], params, n=3) == out  # seeded sampling repeats


def test_greedy_generate_completions_is_deterministic_and_independent_of_batching(warm):
    model, processor, records = warm
    fmt, greedy = PromptFormat(processor), SamplingParams(3, temperature=0.0)
    first = generate_completions(HFEngine(model, processor), fmt, records[:6], greedy, n=2)
    assert all(a == b for a, b in first)  # greedy: the n completions of a record agree
    torch.manual_seed(123)  # greedy decoding does not depend on the RNG...
    second = generate_completions(HFEngine(model, processor, batch_size=3), fmt, records[:6], greedy, n=2)
    assert second == first  # ...nor on how the records are chunked


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("params", [dict(temperature=1.0), dict(temperature=0.7, top_k=20, top_p=0.9)])
def test_the_samplers_logprobs_equal_a_scoring_forwards_and_are_zero_after_the_end(warm, fused, params):
    """pi_old from the sampler (``HFEngine.sample``): log softmax(logits / T) over the whole vocabulary, as the
    scoring forward computes it, not the truncated (top-k / top-p, suppressed tokens) distribution drawn from."""
    model, processor, records = warm
    torch.manual_seed(4)
    engine = HFEngine(model, processor, fused_decoding=fused)
    sampling = SamplingParams(max_new_tokens=8, **params)
    ro = make_rollout(engine, PromptFormat(processor), records[:3], 4, sampling)
    mask = ro.response_mask.bool()
    assert len(mask.sum(1).unique()) > 1  # the sequences end at different steps
    scored, _ = score_rollout(model, ro, temperature=sampling.temperature, micro_batch_size=32)
    assert ro.old_logprobs.shape == scored.shape and ro.old_logprobs.dtype == torch.float32
    torch.testing.assert_close(ro.old_logprobs[mask], scored[mask], atol=1e-5, rtol=1e-5)
    assert (ro.old_logprobs[~mask] == 0).all() and (ro.old_logprobs[mask] < 0).all()


def test_the_sampler_gives_no_logprobs_where_it_does_not_sample_them(warm):
    model, processor, records = warm
    prompts = collate_prompts(PromptFormat(processor), records[:2])
    greedy = HFEngine(model, processor, record_routing=True).sample(prompts, SamplingParams(3, temperature=0.0), 2)
    assert greedy.ids.shape[0] == 4 and greedy.logprobs is None and greedy.routing is None  # evaluation: no need
    generated = HFEngine(model, processor, shared_prefill=False, record_routing=True).sample(
        prompts, SamplingParams(3, 1.0), 2)
    assert generated.ids.shape[0] == 4 and generated.logprobs is None and generated.routing is None  # generate's


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_sampler_records_the_experts_a_scoring_forward_sends_every_token_to(warm, fused, temperature):
    """``record_routing``: the prefill's experts for the prompt tokens (repeated to each prompt's rows) and each fed
    token's for the completion, the last one included, as ``score_rollout`` records them (routing replay and
    routing drift read them)."""
    model, processor, records = warm
    torch.manual_seed(5)
    engine = HFEngine(model, processor, fused_decoding=fused, record_routing=True)
    questions = ["Which colour?", "What color is the shape? Answer with one word, please.", "Shape?"]
    prompts = [dict(r, prompt=q) for r, q in zip(records[:3], questions)]  # prompts of different lengths
    ro = make_rollout(engine, PromptFormat(processor), prompts, 4, SamplingParams(8, temperature))
    assert len(ro.response_mask.sum(1).unique()) > 1  # sequences end at different steps
    _, scored = score_rollout(model, ro, temperature=1.0, micro_batch_size=32)
    assert ro.routing.shape == scored.shape and ro.routing.dtype == scored.dtype == torch.int8
    real = torch.cat([ro.prompt_mask, ro.response_mask], 1).bool()  # (N, P + C) the prompt's and completion's tokens
    assert torch.equal(ro.routing[real].sort(-1).values, scored[real].sort(-1).values)
    assert HFEngine(model, processor).sample(collate_prompts(PromptFormat(processor), records[:1]),
                                             SamplingParams(2, 1.0), 2).routing is None  # off unless asked
