"""Tiny random checkpoints of every supported family, for fidelity tests.

Every parameter is random, norm weights and biases included, so a growth rule that
only works for the default initialisation (ones, zeros) cannot pass.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoConfig

from hyperclone.grow.verify import VerifyResult, causal_lm_auto, compare_models

# Greedy tokens generated with the KV cache in a tiny model's comparison: 16 after verify's 8-token prompt reach
# past every tiny model's sliding window, attention chunk and scan chunk (at most 8) twice. verify's default of 32
# (for real checkpoints) made generation half of the family matrix's time (tests/test_families.py: 40.7 s -> 30.9 s
# for 36 of its cases on this 2-core machine, 2026-12-08).
TINY_NEW_TOKENS = 16
VOCAB = 97


def compare_tiny(source, grown, **options) -> VerifyResult:
    """compare_models (logits and greedy generation) with the tiny models' generation length."""
    return compare_models(source, grown, new_tokens=TINY_NEW_TOKENS, **options)


# Per family: config overrides that make a tiny model with GQA where the family has it,
# biases where the family allows them, and the family's special features switched on.
TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  head_dim=8, num_hidden_layers=2, attention_bias=True, mlp_bias=True),
    # Arcee AFM: Llama's attention, a non-gated ReLU² MLP (up_proj, down_proj), YaRN rope as in AFM-4.5B
    "arcee": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                  num_hidden_layers=2, attention_bias=True, mlp_bias=True,
                  rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16,
                                       rope_theta=10000.0)),
    "mistral": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=3,
                    head_dim=8, num_hidden_layers=2, sliding_window=None),
    "qwen2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=2),
    "qwen3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  head_dim=8, num_hidden_layers=2),
    "gemma": dict(hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=1,
                  head_dim=12, num_hidden_layers=2),
    "gemma2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
                   head_dim=12, query_pre_attn_scalar=12, num_hidden_layers=2, sliding_window=8),
    "gemma3_text": dict(hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
                        head_dim=12, query_pre_attn_scalar=12, num_hidden_layers=2, sliding_window=8),
    # Gemma 4 (text; 26B-A4B's layout): sliding layers (8 heads of 8 over 4 KV heads) and full-attention layers with
    # their own head_dim and KV heads (16 and 2: per_layer_config) whose keys serve as values (attention_k_eq_v), a
    # dense MLP beside 4 experts in every layer, the router scaling its input by 1/sqrt(hidden), a layer_scalar per
    # layer (randomised below), no per-layer embeddings and no KV sharing (E2B/E4B: tests/test_gemma4.py)
    "gemma4_text": dict(hidden_size=48, intermediate_size=80, num_attention_heads=8, num_key_value_heads=4, head_dim=8,
                        global_head_dim=16, num_global_key_value_heads=2, attention_k_eq_v=True, num_hidden_layers=3,
                        layer_types=["sliding_attention", "full_attention", "full_attention"], sliding_window=8,
                        hidden_size_per_layer_input=0, enable_moe_block=True, num_experts=4, top_k_experts=2,
                        moe_intermediate_size=40, final_logit_softcapping=30.0),
    # Gemma 3n (text; E2B's layout): AltUp's 4 streams, LAuReL, per-layer embeddings (a smaller vocabulary of their
    # own), the last 2 layers reusing earlier layers' keys and values, activation sparsity (a gaussian top-k over the
    # MLP) in a layer of each kind, sliding and full attention, q/k/v norms, logit soft cap
    "gemma3n_text": dict(hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
                         head_dim=12, num_hidden_layers=4, sliding_window=8,
                         layer_types=["sliding_attention", "full_attention"] * 2, num_kv_shared_layers=2,
                         hidden_size_per_layer_input=8, vocab_size_per_layer_input=64, laurel_rank=8,
                         activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.95], final_logit_softcapping=30.0),
    # RecurrentGemma (Griffin): the block_types cycle (recurrent, recurrent, attention) over 4 layers, RG-LRU blocks
    # of 16 channels (lru_width 64, wider than the hidden size; 4 blocks: num_attention_heads) with block-diagonal
    # input and recurrence gates, a depthwise conv over them, local attention (window 8, GQA, biases, half-rotary
    # heads of hidden / heads), an MLP intermediate_size // 2 wide with biases, embeddings times sqrt(hidden) rounded
    # to bfloat16, Gemma's 1 + w RMSNorms and a logit soft cap
    "recurrent_gemma": dict(hidden_size=48, intermediate_size=160, num_attention_heads=4, num_key_value_heads=2,
                            lru_width=64, num_hidden_layers=4, attention_window_size=8, attention_bias=True,
                            logits_soft_cap=10.0),
    # DiffLlama: differential attention (heads p and p + 4 paired, values split into halves of the KV heads, a
    # lambda per layer from four random vectors), GQA, biases on all four projections; 3 layers: three lambda_init
    "diffllama": dict(hidden_size=48, intermediate_size=80, num_attention_heads=8, num_key_value_heads=4, head_dim=6,
                      num_hidden_layers=3, attention_bias=True),
    "phi3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                 num_hidden_layers=2, pad_token_id=0, partial_rotary_factor=0.5),
    "olmo": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                 num_hidden_layers=2, pad_token_id=0, clip_qkv=3.0),
    "olmo2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=2, pad_token_id=0),
    "gpt_neox": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_hidden_layers=2,
                     rotary_pct=0.5),
    "opt": dict(hidden_size=48, ffn_dim=80, num_attention_heads=6, num_hidden_layers=2,
                word_embed_proj_dim=48, max_position_embeddings=64, pad_token_id=1),
    "gpt2": dict(n_embd=48, n_inner=80, n_head=6, n_layer=2, n_positions=64),
    # GPT-BigCode (StarCoder, SantaCoder): multi-query attention, one KV head that every query head reads
    "gpt_bigcode": dict(n_embd=48, n_inner=80, n_head=6, n_layer=2, n_positions=64, multi_query=True),
    "granite": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                    num_hidden_layers=2, embedding_multiplier=3.0, residual_multiplier=0.5,
                    attention_multiplier=0.2, logits_scaling=2.0, attention_bias=True),
    "smollm3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                    num_hidden_layers=4, no_rope_layer_interval=2),
    "ministral": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                      head_dim=8, num_hidden_layers=2, sliding_window=8),
    "seed_oss": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                     head_dim=8, num_hidden_layers=2, attention_bias=True, attention_out_bias=True, mlp_bias=True),
    "ernie4_5": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                     head_dim=8, num_hidden_layers=2, use_bias=True),
    "hunyuan_v1_dense": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                             head_dim=8, num_hidden_layers=2, attention_bias=True),
    "olmo3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=2, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                  attention_bias=True),
    "exaone4": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                    num_hidden_layers=2, sliding_window=8, layer_types=["sliding_attention", "full_attention"]),
    # GLM-4-9B-chat-hf (model_type glm): GLM-4's fused gate_up_proj and half-rotary heads, without its post-norms
    "glm": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                head_dim=8, num_hidden_layers=2, attention_bias=True, partial_rotary_factor=0.5),
    "glm4": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                 head_dim=8, num_hidden_layers=2, attention_bias=True, partial_rotary_factor=0.5),
    "starcoder2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                       num_hidden_layers=2, use_bias=True, sliding_window=8),
    "phi": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                num_hidden_layers=2, qk_layernorm=True, partial_rotary_factor=0.5),
    "cohere2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                    num_hidden_layers=2, attention_bias=True, logit_scale=0.5, sliding_window=8,
                    layer_types=["sliding_attention", "full_attention"]),
    "falcon": dict(hidden_size=48, ffn_hidden_size=80, num_attention_heads=6, num_kv_heads=2, num_hidden_layers=2,
                   new_decoder_architecture=True, num_ln_in_parallel_attn=2, bias=True),
    "cohere": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                   num_hidden_layers=2, attention_bias=True, use_qk_norm=True, logit_scale=0.5),
    "apertus": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                    head_dim=8, num_hidden_layers=2, attention_bias=True, rope_parameters=dict(
                        rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=32, rope_theta=10000.0)),
    # Apertus 1.5's text model: Apertus' layout (its releases' pruned output projection: test_families.py)
    "apertus1p5_text": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                            head_dim=8, num_hidden_layers=2, attention_bias=True, rope_parameters=dict(
                                rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                original_max_position_embeddings=32, rope_theta=10000.0)),
    "stablelm": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                     num_hidden_layers=2, use_qkv_bias=True, use_parallel_residual=True, partial_rotary_factor=0.5),
    # mixtures of experts: 4 experts, top-2, every layer routed; renormalised top-k (Qwen3-MoE, Mixtral always)
    # and not (OLMoE, Qwen2-MoE, whose shared expert has its own width and sigmoid gate)
    "qwen3_moe": dict(hidden_size=48, moe_intermediate_size=40, intermediate_size=80, num_attention_heads=6,
                      num_key_value_heads=2, head_dim=8, num_hidden_layers=2, num_experts=4, num_experts_per_tok=2,
                      norm_topk_prob=True, attention_bias=True),
    "mixtral": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                    num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=None),
    # Phi-3.5-MoE: Mixtral's experts under LayerNorms with biases, biased attention and output projection, sparsemixer
    # routing (the top expert, then the best of the rest, each weighed by a softmax over the logits within a relative
    # 2 x router_jitter_noise of it), LongRoPE with its short and long scales (its LayerNorm biases, random near 1 as
    # every norm's here, steer the first router: these widths make it route tokens to 3 expert pairs)
    "phimoe": dict(hidden_size=48, intermediate_size=24, num_attention_heads=6, num_key_value_heads=3,
                   num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, attention_bias=True,
                   lm_head_bias=True, router_jitter_noise=0.1,
                   rope_parameters=dict(rope_type="longrope", short_factor=[1.0, 1.1, 1.2, 1.3],
                                        long_factor=[1.0, 2.0, 3.0, 4.0], short_mscale=1.1, long_mscale=1.2,
                                        original_max_position_embeddings=16, rope_theta=10000.0)),
    # MiniMax-M2: Mixtral's expert names, sigmoid scores plus a correction bias choosing the top k (always
    # renormalised), RMSNorms over the whole q and k projections, partial rotary stated as rotary_dim (the releases')
    "minimax_m2": dict(hidden_size=48, intermediate_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                       num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, rotary_dim=4),
    "olmoe": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, clip_qkv=3.0),
    "qwen2_moe": dict(hidden_size=48, moe_intermediate_size=40, intermediate_size=80,
                      shared_expert_intermediate_size=20, num_attention_heads=6, num_key_value_heads=2,
                      num_hidden_layers=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False),
    # Granite MoE (PowerMoE, Granite-3.0 MoE): experts stored as stacked 3-D tensors, softmax over the top k of the
    # router's logits, Granite's multipliers; GraniteMoeShared adds a shared MLP with its own width
    "granitemoe": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2,
                       num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, attention_bias=True,
                       embedding_multiplier=3.0, residual_multiplier=0.5, attention_multiplier=0.2,
                       logits_scaling=2.0),
    # GPT-OSS: experts stacked as [experts, in, out] with gate and up interleaved, biases everywhere, a learned
    # attention sink per head, sliding and full attention layers alternating, a clamped SwiGLU with (up + 1)
    "gpt_oss": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                    num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=4,
                    rope_parameters={"rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                     "truncate": False, "original_max_position_embeddings": 16,
                                     "rope_theta": 150000.0}),
    "granitemoeshared": dict(hidden_size=48, intermediate_size=40, shared_intermediate_size=80,
                             num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4,
                             num_experts_per_tok=2, attention_bias=True, embedding_multiplier=3.0,
                             residual_multiplier=0.5, attention_multiplier=0.2, logits_scaling=2.0),
    # DeepSeek-V3: latent attention (q LoRA, shared rope key, no-rope/rope/value parts of each head), a dense first
    # layer then experts with a shared expert, sigmoid scores with a correction bias, group-limited top-k, scaled
    "deepseek_v3": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                        num_key_value_heads=6, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3, first_k_dense_replace=1,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                        norm_topk_prob=True, routed_scaling_factor=2.5),
    # Mistral Small 4 (mistral4): DeepSeek-V3's latent attention (q LoRA, interleaved rope) with YaRN and Llama 4's
    # position-dependent query scaling past original_max_position_embeddings (16: the 64-token checks cross it), a
    # dense first layer then experts (stored fused, [experts, 2 x ffn, hidden]) with a shared expert, softmax scores
    # without a correction bias, renormalised and scaled; one expert group, as the release (top-2-sum groups, n_group
    # 2, in tests/test_segment.py)
    "mistral4": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                     num_key_value_heads=6, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8,
                     v_head_dim=6, num_hidden_layers=3, first_k_dense_replace=1, n_routed_experts=4,
                     num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1, norm_topk_prob=True,
                     routed_scaling_factor=2.5, attention_bias=True,
                     rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                          original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                                          mscale_all_dim=1.0, mscale=1.0, llama_4_scaling_beta=0.1)),
    # DeepSeek-V3.2: DeepSeek-V3's latent attention and experts plus DeepSeek Sparse Attention's lightning indexer
    # (its own 8 heads of 8 reading the q latent, one key head reading the residual stream, per-head weights, a
    # LayerNorm on its key): each query attends to its top 8 keys, so the 64-token checks drop most keys
    "deepseek_v32": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                         num_key_value_heads=6, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4,
                         qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3, first_k_dense_replace=1,
                         n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                         norm_topk_prob=True, routed_scaling_factor=2.5, index_topk=8, index_head_dim=8,
                         index_n_heads=8),
    # DeepSeek-V4: 3 residual streams mixed by hyper-connections (Sinkhorn-normalised comb) around every sub-layer and
    # collapsed by hc_head before the final norm; one shared key-value head (MQA) with a weighted RMSNorm, queries
    # through a q LoRA with a weightless RMSNorm per head, partial interleaved rope (4 of 8), attention sinks, a grouped
    # output projection (2 groups of 3 heads, each to its own 12-wide latent); a sliding layer, a compressed sparse
    # layer (KV pooled 4 tokens at a time in two overlapping series, and a lightning indexer keeping the top 2 pooled
    # entries) and a heavily compressed one (8 tokens per entry), so the 64-token checks use every branch; YaRN on the
    # compressed layers' rope; a hash-routed MoE first (a fixed random token -> experts table) then sqrt-softplus
    # routing with a correction bias, renormalised and scaled, a shared expert as wide as each routed one, and the
    # SwiGLU clamp at 1 (a quarter of the shared expert's gate pre-activations pass it)
    "deepseek_v4": dict(hidden_size=48, moe_intermediate_size=24, num_attention_heads=6, head_dim=8,
                        partial_rotary_factor=0.5, q_lora_rank=24, o_groups=2, o_lora_rank=12, hc_mult=3,
                        num_hidden_layers=3, sliding_window=8, n_routed_experts=4, num_experts_per_tok=2,
                        layer_types=["sliding_attention", "compressed_sparse_attention",
                                     "heavily_compressed_attention"], mlp_layer_types=["hash_moe", "moe", "moe"],
                        compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 8},
                        index_n_heads=2, index_head_dim=8, index_topk=2, swiglu_limit=1.0,
                        rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16,
                                             beta_fast=32.0, beta_slow=1.0)),
    # DeepSeek-V2(-Lite): no q LoRA (q_proj reads the residual), biased MLPs, softmax scores not renormalised,
    # group-limited greedy top-k
    "deepseek_v2": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                        num_key_value_heads=6, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3, first_k_dense_replace=1,
                        n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=2, n_group=2, topk_group=1,
                        topk_method="group_limited_greedy", mlp_bias=True, routed_scaling_factor=1.5),
    # MiniCPM3: DeepSeek-V2's latent attention (q LoRA) over a dense MLP, embeddings times scale_emb, each residual
    # branch times scale_depth / sqrt(layers), logits divided by hidden / dim_model_base (grown with them)
    "minicpm3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=6,
                     q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6,
                     num_hidden_layers=2, attention_bias=True, mlp_bias=True, scale_emb=3.0, scale_depth=1.7,
                     dim_model_base=16),
    # GLM-4.7-Flash: DeepSeek-V3's latent attention and experts, dense layers listed per layer (mlp_layer_types)
    "glm4_moe_lite": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                          num_key_value_heads=6, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4,
                          qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3,
                          mlp_layer_types=["dense", "sparse", "sparse"], n_routed_experts=4, num_experts_per_tok=2,
                          n_shared_experts=1, n_group=2, topk_group=1, norm_topk_prob=True),
    # GLM-5 (glm_moe_dsa): GLM-4.7-Flash's layout plus DeepSeek-V3.2's lightning indexer, its rope interleaved
    "glm_moe_dsa": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                        num_key_value_heads=6, q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3,
                        mlp_layer_types=["dense", "sparse", "sparse"], n_routed_experts=4, num_experts_per_tok=2,
                        n_shared_experts=1, n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5,
                        index_topk=8, index_head_dim=8, index_n_heads=8),
    # MiMo-V2-Flash: GLM-4.5's router and experts (no shared expert) after a dense first layer (mlp_layer_types);
    # sliding layers with twice the KV heads, attention sinks and their own rope, values narrower than the keys and
    # scaled by attention_value_scale, partial rotary heads
    "mimo_v2_flash": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=8,
                          num_key_value_heads=2, head_dim=8, v_head_dim=6, num_hidden_layers=3,
                          layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                          mlp_layer_types=["dense", "sparse", "sparse"], n_routed_experts=4, num_experts_per_tok=2,
                          n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5, sliding_window=4,
                          attention_value_scale=0.6, attention_bias=True,
                          rope_parameters={kind: dict(rope_type="default", rope_theta=theta, partial_rotary_factor=0.5)
                                           for kind, theta in (("full_attention", 1e4), ("sliding_attention", 1e3))}),
    # GLM-4.5: grouped-query attention with q/k norms, biases and half-rotary heads, DeepSeek-V3's experts
    "glm4_moe": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                     num_key_value_heads=2, head_dim=8, num_hidden_layers=3, first_k_dense_replace=1,
                     n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                     norm_topk_prob=True, use_qk_norm=True, attention_bias=True, routed_scaling_factor=2.5,
                     partial_rotary_factor=0.5),
    # dots.llm1: GLM-4.5's layout with sliding-window layers, softmax-free sigmoid routing not renormalised
    "dots1": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                  num_key_value_heads=2, head_dim=8, num_hidden_layers=3, first_k_dense_replace=1,
                  n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=2, n_group=2, topk_group=1,
                  norm_topk_prob=False, routed_scaling_factor=2.0, sliding_window=8, attention_bias=True,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    # ERNIE 4.5 MoE: a dense first layer then experts (moe_layer_start_index/end_index/interval) with shared experts
    # (moe_num_shared_experts x the expert width), softmax scores plus a correction bias choosing the top k, the top k
    # renormalised; biases everywhere but the experts (use_bias: the output projection too)
    "ernie4_5_moe": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=40, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=8, num_hidden_layers=3, moe_num_experts=4, moe_k=2,
                         moe_num_shared_experts=2, moe_layer_start_index=1, moe_layer_end_index=-1,
                         moe_layer_interval=1, use_bias=True),
    # Hy3 (hy_v3): GQA with q/k norms, a dense first layer (mlp_layer_types), experts routed by sigmoid scores plus a
    # correction bias (stored as mlp.expert_bias, the router as mlp.router.gate), renormalised and scaled, a shared MLP
    "hy_v3": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                  num_key_value_heads=2, head_dim=8, num_hidden_layers=3, mlp_layer_types=["dense", "sparse", "sparse"],
                  num_experts=4, num_experts_per_tok=2, num_shared_experts=1, router_scaling_factor=2.5),
    # AFMoE (Arcee Trinity): q/k norms, a sigmoid output gate per attention channel, rope on sliding layers only,
    # post-norms, a dense first layer, sigmoid routing with an expert_bias, renormalised and scaled, shared experts,
    # muP's sqrt(hidden) embedding multiplier
    "afmoe": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                  num_key_value_heads=2, head_dim=8, num_hidden_layers=3, num_dense_layers=1, num_experts=4,
                  num_experts_per_tok=2, num_shared_experts=1, route_scale=2.5, sliding_window=8,
                  layer_types=["sliding_attention", "full_attention", "sliding_attention"], mup_enabled=True,
                  attention_bias=True),
    # JetMoE: a mixture of attention heads (each expert its own query and output projections over the shared KV heads,
    # top-k experts' queries side by side) and of MLPs (stacked [experts, out, in] like Granite's), each adding a bias;
    # its layers' RMSNorms hard-code their epsilon (the hidden size grows by whole multiples)
    "jetmoe": dict(hidden_size=48, intermediate_size=40, num_key_value_heads=2, kv_channels=8, num_local_experts=4,
                   num_experts_per_tok=2, num_hidden_layers=2),
    # Hunyuan-A13B: experts and a shared MLP as wide as intermediate_size, q/k norms after rope, softmax top-k
    "hunyuan_v1_moe": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2,
                           head_dim=8, num_hidden_layers=2, num_experts=4, moe_topk=2, use_qk_norm=True),
    # Llama 4 (text): a dense first layer (intermediate_size_mlp) then experts stored fused [experts, in, 2 x out]
    # beside a shared expert as wide as each (moe_layers), a no-rope layer every 2nd with attention temperature tuning,
    # chunked attention and weightless q/k norms on the rope layers, sigmoid scores of the top k scaling each
    # expert's input
    "llama4_text": dict(hidden_size=48, intermediate_size=40, intermediate_size_mlp=80, num_attention_heads=6,
                        num_key_value_heads=2, head_dim=8, num_hidden_layers=2, num_local_experts=4,
                        num_experts_per_tok=2, interleave_moe_layer_step=2, no_rope_layer_interval=2,
                        attention_chunk_size=8, floor_scale=4, attn_scale=0.5, use_qk_norm=True,
                        attention_bias=True),
    # DBRX: a fused Wqkv with clip_qkv, LayerNorms without bias (eps fixed), 4 experts (top-2, weights normalised by
    # their p-norm) stored flattened as w1, v1, w2 of [experts x ffn, hidden] per layer; nested attn_config and
    # ffn_config (transformers' DBRX never ties its embeddings)
    "dbrx": dict(d_model=48, n_heads=6, n_layers=2, max_seq_len=64,
                 attn_config=dict(kv_n_heads=2, clip_qkv=3.0, rope_theta=10000.0),
                 ffn_config=dict(ffn_hidden_size=40, moe_num_experts=4, moe_top_k=2, moe_normalize_expert_weights=1.0)),
    # hybrid state-space models: Mamba2 mixers (heads in 2 B/C groups, a short chunk so the scan crosses chunks)
    # Falcon-H1: a Mamba2 mixer and attention in parallel in every layer, the gated RMSNorm its releases use, and
    # every µP multiplier away from 1 (mlp_multipliers has 2 entries, as many as the layers)
    "falcon_h1": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                      head_dim=8, num_hidden_layers=2, mamba_d_ssm=64, mamba_n_heads=8, mamba_d_head=8,
                      mamba_n_groups=2, mamba_d_state=8, mamba_d_conv=4, mamba_chunk_size=8, mamba_rms_norm=True,
                      mamba_norm_before_gate=False, mamba_conv_bias=True, mamba_proj_bias=True, projectors_bias=True,
                      attention_bias=True, mlp_bias=True, embedding_multiplier=2.0, lm_head_multiplier=0.5,
                      key_multiplier=0.7, attention_in_multiplier=1.3, attention_out_multiplier=0.8,
                      ssm_in_multiplier=1.2, ssm_out_multiplier=0.9, mlp_multipliers=[1.1, 0.9],
                      ssm_multipliers=[1.1, 0.9, 1.2, 0.8, 1.3]),
    # Bamba: Mamba2 layers (inner width expand x hidden, gated norm always) with attention at attn_layer_indices
    "bamba": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=3, attn_layer_indices=[1], mamba_n_heads=12, mamba_d_head=8, mamba_n_groups=2,
                  mamba_d_state=8, mamba_d_conv=4, mamba_chunk_size=8, mamba_proj_bias=True, attention_bias=True,
                  mlp_bias=True),
    # Granite-4.0-H: Mamba2 and attention layers listed in layer_types (the Hub's "mamba"/"attention"), experts
    # stored as stacked 3-D tensors beside a shared MLP, Granite's multipliers (num_local_experts=0: dense, in
    # tests/test_hybrids.py)
    "granitemoehybrid": dict(hidden_size=48, intermediate_size=40, shared_intermediate_size=80,
                             num_attention_heads=6, num_key_value_heads=2, num_hidden_layers=3,
                             layer_types=["mamba", "attention", "mamba"], num_local_experts=4, num_experts_per_tok=2,
                             mamba_n_heads=12, mamba_d_head=8, mamba_n_groups=2, mamba_d_state=8, mamba_d_conv=4,
                             mamba_chunk_size=8, mamba_proj_bias=True, position_embedding_type="rope",
                             attention_bias=True, embedding_multiplier=3.0, residual_multiplier=0.5,
                             attention_multiplier=0.2, logits_scaling=2.0),
    # Nemotron-H: one mixer per block (hybrid_override_pattern "ME*-": Mamba2, experts, attention without RoPE, a
    # squared-ReLU MLP), non-gated experts with a shared expert, sigmoid group-limited routing, biases (a latent
    # MoE, moe_latent_size, in tests/test_hybrids.py); transformers' NemotronH never ties its embeddings
    "nemotron_h": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                       layers_block_type=["linear_attention", "moe", "full_attention", "mlp"], mamba_num_heads=12,
                       mamba_head_dim=8, n_groups=2, ssm_state_size=8, conv_kernel=4, chunk_size=8, n_routed_experts=4,
                       num_experts_per_tok=2, moe_intermediate_size=24, moe_shared_expert_intermediate_size=40,
                       n_group=2, topk_group=1, use_bias=True, mlp_bias=True, routed_scaling_factor=2.5),
    # Zamba2: Mamba2 layers and hybrid layers, in which a shared transformer block (2 of them, num_mem_blocks, reused
    # in turn: the third hybrid layer reuses the first's) reads the residual stream beside the word embeddings (2 x
    # hidden wide, head_dim = 2 x hidden / heads, scores scaled by (head_dim / 2) ** -0.5, RoPE), with per-layer LoRA
    # adapters on q, k, v (they add 2 x hidden wide outputs: as many KV heads as heads) and on gate_up_proj, and a
    # per-layer linear back to hidden that the Mamba2 mixer's input adds; biases on in_proj, out_proj and the MLP
    "zamba2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=6,
                   num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "hybrid", "hybrid"], num_mem_blocks=2,
                   n_mamba_heads=12, mamba_expand=2, mamba_ngroups=2, mamba_d_state=8, mamba_d_conv=4, chunk_size=8,
                   use_shared_attention_adapter=True, adapter_rank=4, use_mem_rope=True, add_bias_linear=True),
    # Mamba2 (Mamba-Codestral, state-spaces/mamba2): every block one Mamba2 mixer (12 heads of 8 in 2 B/C groups,
    # inner width expand x hidden, the gated norm always), no attention, no MLP; biases on in_proj, conv and out_proj
    "mamba2": dict(hidden_size=48, num_hidden_layers=2, expand=2, num_heads=12, head_dim=8, n_groups=2, state_size=8,
                   conv_kernel=4, chunk_size=8, use_bias=True, use_conv_bias=True),
    # Mamba (Mamba1; state-spaces/mamba-*-hf): every block one Mamba mixer (inner channels expand x hidden, each with
    # its own scan over the kept state, a time step of low rank time_step_rank), no attention, no MLP; biases on
    # in_proj, conv and out_proj. Falcon-Mamba adds weightless RMS norms over dt, B and C
    "mamba": dict(hidden_size=48, num_hidden_layers=2, expand=2, state_size=8, conv_kernel=4, time_step_rank=5,
                  use_bias=True, use_conv_bias=True),
    "falcon_mamba": dict(hidden_size=48, num_hidden_layers=2, expand=2, state_size=8, conv_kernel=4, time_step_rank=5,
                         use_bias=True, use_conv_bias=True, mixer_rms_eps=1e-6),
    # Jamba: Mamba mixers (with RMS norms over dt, B and C) and attention without RoPE, dense MLPs and experts, each
    # partition set by a period and an offset (as Jamba-v0.1's period 8 / offset 4 and 2 / 1: here mamba/dense,
    # mamba/moe, attention/dense, mamba/moe); the dense MLPs as wide as each expert
    "jamba": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2,
                  num_hidden_layers=4, attn_layer_period=4, attn_layer_offset=2, expert_layer_period=2,
                  expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
                  mamba_expand=2, mamba_dt_rank=5, mamba_conv_bias=True, mamba_proj_bias=True),
    # Qwen3.5 (text): gated DeltaNet layers (2 key heads, 4 value heads of other widths, a 3-wide conv) around a
    # gated attention layer (each query head with its output gate, q/k norms, partial rotary at the config's
    # default factor 0.25), (1 + w) norms
    "qwen3_5_text": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                         num_hidden_layers=3, layer_types=["linear_attention", "full_attention", "linear_attention"],
                         linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                         linear_value_head_dim=12, linear_conv_kernel_dim=3),
    # Qwen3.5-MoE: Qwen3.5's mixers with Qwen3-Next's experts (a shared expert behind a sigmoid gate, softmax top-k
    # always renormalised) in every layer
    "qwen3_5_moe_text": dict(hidden_size=48, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                             num_hidden_layers=3,
                             layer_types=["linear_attention", "full_attention", "linear_attention"],
                             linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                             linear_value_head_dim=12, linear_conv_kernel_dim=3, num_experts=4, num_experts_per_tok=2,
                             moe_intermediate_size=40, shared_expert_intermediate_size=20),
    # Qwen3-Next: Qwen3.5's mixers with the DeltaNet projections fused per key head (in_proj_qkvz, in_proj_ba), and
    # experts with a shared expert behind a sigmoid gate in every layer
    "qwen3_next": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                       num_hidden_layers=3, layer_types=["linear_attention", "full_attention", "linear_attention"],
                       linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                       linear_value_head_dim=12, linear_conv_kernel_dim=3, num_experts=4, num_experts_per_tok=2,
                       moe_intermediate_size=40, shared_expert_intermediate_size=20),
    # OLMo Hybrid: gated DeltaNet layers (separate q/k/v/a/b/g projections, q/k/v short convolutions stored apart, a
    # gated norm per value head; beta doubled) beside OLMo 3's attention (q/k norms over the whole projection,
    # post-norms), head_dim hidden / heads; key and value widths equal (16), as transformers 5.25's save_pretrained
    # splits the fused conv1d into three equal parts
    "olmo_hybrid": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                        num_hidden_layers=3, layer_types=["linear_attention", "full_attention", "linear_attention"],
                        linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8,
                        linear_value_head_dim=4, linear_conv_kernel_dim=3),
    # Kimi Linear: Kimi Delta Attention (gated delta rule with per-channel decay: q/k/v short convolutions, low-rank
    # forget and output gates, beta per head, a gated norm per head; 4 heads of 8) between latent-attention layers
    # (DeepSeek-V3's MLA without rope, no q LoRA as in the release), a dense first layer then sigmoid-routed experts
    # with a correction bias, groups and a shared expert
    "kimi_linear": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                        num_key_value_heads=6, q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=4,
                        qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=3,
                        layer_types=["linear_attention", "full_attention", "linear_attention"],
                        mlp_layer_types=["dense", "sparse", "sparse"], linear_num_heads=4, linear_head_dim=8,
                        linear_conv_kernel_dim=3, num_local_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                        n_group=2, topk_group=1, norm_topk_prob=True, routed_scaling_factor=2.5),
    # Ministral 3: Mistral's layout with a sliding window, YaRN rope and Llama 4's per-position query scaling
    # (1 + beta log(1 + floor(position / original_max_position_embeddings))), here changing every 8 positions
    "ministral3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                       num_hidden_layers=2, sliding_window=8,
                       rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=8.0,
                                            original_max_position_embeddings=8, beta_fast=32.0, beta_slow=1.0,
                                            mscale_all_dim=1.0, mscale=1.0, llama_4_scaling_beta=0.1)),
    # Helium (Kyutai): Llama's layout with interleaved rope and an o_proj as wide as the hidden size, no o_proj bias
    "helium": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                   num_hidden_layers=2, attention_bias=True, mlp_bias=True),
    # VaultGemma: Gemma 2 without its post-attention and post-feedforward norms (soft caps, sliding layers, (1 + w))
    "vaultgemma": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                       query_pre_attn_scalar=8, num_hidden_layers=2, sliding_window=8),
    # Granite SWA: Granite's multipliers, a learned attention sink per head, sliding and full layers, a NoPE layer
    # (layer_rope_theta 0)
    "granite_swa": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                        num_hidden_layers=2, embedding_multiplier=3.0, residual_multiplier=0.5,
                        attention_multiplier=0.2, logits_scaling=2.0, attention_bias=True, sliding_window=4,
                        layer_types=["sliding_attention", "full_attention"], layer_rope_theta=[10000.0, 0]),
    # Granite MoE SWA: GraniteMoeShared's experts (stacked 3-D, saved under transformers' in-memory names) and shared
    # MLP with Granite SWA's attention sinks, sliding layers and NoPE layer
    "granitemoe_swa": dict(hidden_size=48, intermediate_size=40, shared_intermediate_size=80, num_attention_heads=6,
                           num_key_value_heads=2, num_hidden_layers=2, num_local_experts=4, num_experts_per_tok=2,
                           attention_bias=True, embedding_multiplier=3.0, residual_multiplier=0.5,
                           attention_multiplier=0.2, logits_scaling=2.0, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention"], layer_rope_theta=[10000.0, 0]),
    # FlexOlmo: OLMoE's experts (softmax top-k, not renormalised) under OLMo2's post-norms and q/k norms over the
    # whole projection
    "flex_olmo": dict(hidden_size=48, intermediate_size=40, num_attention_heads=6, num_key_value_heads=2,
                      num_hidden_layers=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False),
    # K-EXAONE (exaone_moe): EXAONE 4's attention (q/k norms over head_dim, sliding layers) under pre-norms, a dense
    # first layer (mlp_layer_types) then DeepSeek-V3's routing (sigmoid, correction bias, groups) with a shared expert
    "exaone_moe": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=40, num_attention_heads=6,
                       num_key_value_heads=2, head_dim=8, num_hidden_layers=3, first_k_dense_replace=1, num_experts=4,
                       num_experts_per_tok=2, num_shared_experts=1, n_group=2, topk_group=1, norm_topk_prob=True,
                       routed_scaling_factor=2.5, sliding_window=8, sliding_window_pattern=2),
    # GPT-J: one LayerNorm feeding attention and MLP in parallel, rotary on the first rotary_dim of each head, biased
    # MLP and output projection
    # CodeGen: GPT-J's block with one fused qkv_proj interleaved as [4 model-parallel shards, (q, v, k), hidden / 4];
    # 8 heads of 6 (heads need not divide by the shards: each width is reassembled shard by shard)
    "codegen": dict(n_embd=48, n_inner=80, n_head=8, n_layer=2, n_positions=64, rotary_dim=4),
    # Doge: a dynamic mask per KV head (dt_proj over the values, A) added to the scores, q/k norms over head_dim,
    # per-channel residual gains. keep_window_size stays at its default (2048): under it the top-k of the mask picks
    # among exact ties (a repeated token's values, hence its mask, are equal in layer 0) in an order the source model
    # does not fix either (its own cached and uncached greedy outputs differ at 8)
    "doge": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                 num_hidden_layers=2),
    "gptj": dict(n_embd=48, n_inner=80, n_head=6, n_layer=2, n_positions=64, rotary_dim=4),
    # XGLM: sqrt(d_model) embedding scale, sinusoidal positions computed from d_model (so the hidden size is kept:
    # HIDDEN_FIXED), LayerNorms with biases and a fixed epsilon, biased attention and fc1/fc2 MLP
    "xglm": dict(d_model=48, ffn_dim=80, attention_heads=6, num_layers=2),
    # GPT-Neo: learned positions, global and local (windowed) attention layers from attention_types, scores without
    # the 1/sqrt(head_dim) scale
    "gpt_neo": dict(hidden_size=48, intermediate_size=80, num_heads=6, num_layers=2,
                    attention_types=[[["global", "local"], 1]], window_size=8),
    # Nemotron (Minitron): LayerNorm1P (LayerNorms with bias applying 1 + weight), a non-gated squared-ReLU MLP,
    # partial rotary, biases
    "nemotron": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                     num_hidden_layers=2, attention_bias=True, mlp_bias=True),
    # EXAONE 3.x (exaone: Llama's class, the checkpoints' own names transformer.h.N.attn.attention.*, ln_1, c_fc_0)
    "exaone": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                   num_hidden_layers=2),
    # InternLM3 (Llama's class; qkv_bias and bias together), IQuest-Coder (Llama's class), CWM (Llama's layout with
    # sliding and full layers, llama3 rope)
    "internlm3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                      num_hidden_layers=2, attention_bias=True, mlp_bias=True),
    "iquestcoder": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                        head_dim=8, num_hidden_layers=2),
    "cwm": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                num_hidden_layers=2, sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=4.0, high_freq_factor=4.0,
                                     low_freq_factor=1.0, original_max_position_embeddings=16)),
    # Jais 2: Llama's attention (biases), LayerNorms with bias, a non-gated ReLU² MLP with biases
    "jais2": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                  num_hidden_layers=2),
    # HyperCLOVA X: Granite's multipliers (logits multiplied), an RMSNorm after each sub-layer (use_post_norm)
    "hyperclovax": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                        num_hidden_layers=2, embedding_multiplier=3.0, residual_multiplier=0.5,
                        attention_multiplier=0.2, logits_scaling=2.0, attention_bias=True),
    # nanochat: weightless RMSNorms (one on the embeddings too), q/k norms after rope, a ReLU² MLP (fc1, fc2), logit
    # soft cap
    "nanochat": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                     num_hidden_layers=2, attention_bias=True),
    # Persimmon: GPT-NeoX's fused [heads, 3, head_dim] query_key_value, LayerNorms with bias over each head's q and k,
    # partial rotary, a ReLU² MLP, biases
    "persimmon": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_hidden_layers=2,
                      qk_layernorm=True),
    # Mellum: Qwen3-MoE's attention (q/k norms) and router, sliding and full layers (a rope base each), a dense first
    # layer (mlp_layer_types)
    "mellum": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=24, num_attention_heads=6,
                   num_key_value_heads=2, head_dim=8, num_hidden_layers=3, num_experts=4, num_experts_per_tok=2,
                   mlp_layer_types=["dense", "sparse", "sparse"], sliding_window=8,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
    # Solar Open: Llama's attention, GLM-4.5's experts in every layer (sigmoid router with a correction bias, groups,
    # a shared expert)
    "solar_open": dict(hidden_size=48, moe_intermediate_size=24, num_attention_heads=6, num_key_value_heads=2,
                       head_dim=8, num_hidden_layers=2, n_routed_experts=4, num_experts_per_tok=2,
                       n_shared_experts=1, n_group=2, topk_group=1, norm_topk_prob=True, attention_bias=True,
                       routed_scaling_factor=2.5),
    # Youtu-LLM: DeepSeek-V3's latent attention (q LoRA, interleaved rope) over a dense SwiGLU MLP in every layer, tied;
    # no pad token, as its config's default: YoutuPreTrainedModel._init_weights zeroes the padding row of a loaded
    # embedding (through .data), so a tied source untied would keep the stored row where the source computes zeros
    "youtu": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=6, q_lora_rank=24,
                  kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8, v_head_dim=6, num_hidden_layers=2,
                  pad_token_id=None),
    # LongCat-Flash: two attention sub-layers (DeepSeek's latent attention, its q and kv LoRA scaled by
    # sqrt(hidden / rank)) and two dense MLPs per layer, beside a shortcut MoE whose router also picks
    # zero-computation experts (the input, weighted)
    "longcat_flash": dict(hidden_size=48, ffn_hidden_size=80, expert_ffn_hidden_size=24, num_attention_heads=6,
                          q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=4, head_dim=4, qk_nope_head_dim=8,
                          v_head_dim=6,
                          num_layers=2, n_routed_experts=4, zero_expert_num=2, moe_topk=2,
                          routed_scaling_factor=2.5),
    # Cohere2-MoE: Cohere 2's parallel block (LayerNorms without bias; RMSNorms where rms_norm_eps is set, in
    # tests/test_families.py), sliding layers, logit scale, a dense first layer (with rope forced) then experts with a
    # shared expert averaged in, the top k logits' softmax
    "cohere2_moe": dict(hidden_size=48, intermediate_size=40, prefix_dense_intermediate_size=80,
                        num_attention_heads=6, num_key_value_heads=2, head_dim=8, num_hidden_layers=3,
                        mlp_layer_types=["dense", "sparse", "sparse"], num_experts=4, num_experts_per_tok=2,
                        num_shared_experts=1, attention_bias=True, logit_scale=0.5, sliding_window=8,
                        layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
    # MiniMax-Text-01: lightning (linear) attention layers (a decay per head from the head count and the layer index,
    # blocks of 8 tokens, an RMSNorm over all heads, a sigmoid output gate) among softmax attention layers, a MoE in
    # every layer, residual factors per sub-layer (the residual is the input norm's output)
    "minimax": dict(hidden_size=48, intermediate_size=24, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                    num_hidden_layers=3, layer_types=["linear_attention", "full_attention", "linear_attention"],
                    num_local_experts=4, num_experts_per_tok=2, block_size=8, full_attn_alpha_factor=0.9,
                    full_attn_beta_factor=1.2, linear_attn_alpha_factor=1.1, linear_attn_beta_factor=0.8,
                    mlp_alpha_factor=0.7, mlp_beta_factor=1.3),
    # LFM2: gated short convolutions (B, C, x from in_proj) and attention with q/k norms listed in layer_types, tied
    # embeddings, the MLP width derived from intermediate_size (int(2/3 x 120) = 80, rounded to a multiple of 16)
    "lfm2": dict(hidden_size=48, intermediate_size=120, block_multiple_of=16, num_attention_heads=6,
                 num_key_value_heads=2, num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
                 conv_bias=True, conv_L_cache=3),
    # BitNet b1.58 as its bf16 master weights (no quantization_config: plain nn.Linear): Llama with an RMSNorm over
    # the attention output (attn_sub_norm, heads x head_dim = hidden) and one over the MLP's neurons (ffn_sub_norm),
    # a ReLU² gated MLP, GQA
    "bitnet": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                   num_hidden_layers=2, attention_bias=True),
    # LFM3: LFM2's gated short convolutions among sliding and full attention layers (Qwen3's attention: q/k norms over
    # head_dim, biases, partial "proportional" rope on the full layers), a sigmoid output gate per query head
    # (gate_proj, g_proj in memory), sandwich norms on both branches' outputs, tied embeddings
    "lfm3": dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2, head_dim=8,
                 num_hidden_layers=4, layer_types=["conv", "sliding_attention", "full_attention", "conv"],
                 sliding_window=8, conv_bias=True, conv_L_cache=3, attention_bias=True),
    # LFM2-MoE: LFM2's short convolutions and attention (layer_types) with a dense first layer (num_dense_layers), then
    # experts routed by sigmoid scores plus an expert bias choosing the top k, renormalised and scaled
    "lfm2_moe": dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=40, num_attention_heads=6,
                     num_key_value_heads=2, num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"],
                     num_dense_layers=1, num_experts=4, num_experts_per_tok=2, routed_scaling_factor=1.5,
                     conv_bias=True, conv_L_cache=3),
}
# Falcon-7B's layout (make_tiny("falcon", ..., **FALCON_7B)): the old decoder architecture with multi-query attention
# (one KV head), one LayerNorm per block, no biases
FALCON_7B = dict(new_decoder_architecture=False, multi_query=True, num_ln_in_parallel_attn=None, num_kv_heads=None,
                 bias=False)
# Layouts of a family that its tiny model's defaults do not show, by name: (family, make_tiny overrides)
TINY_VARIANTS: dict[str, tuple[str, dict]] = {"falcon-7b": ("falcon", FALCON_7B)}
MOE_FAMILIES = ("afmoe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "dots1", "ernie4_5_moe",
                "exaone_moe", "flex_olmo", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "gpt_oss", "granitemoe",
                "granitemoe_swa", "granitemoeshared", "hunyuan_v1_moe", "hy_v3", "jetmoe", "llama4_text", "minimax",
                "minimax_m2", "mistral4", "mixtral", "olmoe", "phimoe", "qwen2_moe", "qwen3_moe", "mellum",
                "solar_open", "mimo_v2_flash")
# mixtures of experts kept out of MOE_FAMILIES, their expert splits tested in test_segment.py (MORE_SPLITS):
# Cohere2-MoE's router kind is a config value (expert_selection_fn), LFM2-MoE renormalises with a + 1e-6, Gemma 4
# scales the chosen experts by a per_expert_scale after renormalising
OTHER_MOE_FAMILIES = ("cohere2_moe", "gemma4_text", "lfm2_moe")
HYBRID_FAMILIES = ("bamba", "falcon_h1", "granitemoehybrid", "nemotron_h")  # Mamba2 mixers among (or beside) attention
# whose model class never ties the output projection to the embedding
UNTIED_ONLY = ("nemotron_h", "dbrx", "kimi_linear")
UNTIED_CONFIG = ("dbrx",)  # ... and whose config class refuses tie_word_embeddings true (no tied model can be made)
# whose hidden size cannot grow (the family key hidden_fixed: XGLM's sinusoidal positions follow d_model): the width
# cases grow the MLP alone by the case's factor, the hidden size and heads kept (tests/test_families.py::test_xglm_*)
HIDDEN_FIXED = ("xglm",)

FAMILIES = sorted(TINY_CONFIGS)
# Matrices drawn smaller than randomize_'s 0.2: Zamba2's shared blocks at that scale (attention over 2 x hidden, scores
# in the hundreds, their output added to a Mamba2 input without a residual) make a function float32 cannot evaluate
# to 1e-4 (its own float32 and float64 logits differ by 8e-5); at 0.12 by 1e-6, as the other families'
MATRIX_SCALE = {"zamba2": 0.6}
# correction biases (randomize_: 0.3 std) beside a router whose scores are a softmax over few experts (0.04 to 0.42 in
# LongCat-Flash's tiny model): at std 0.3 the bias alone chose, half its routed experts never taken; at 0.03 (x0.1)
# every routed and zero expert is taken in both layers (tests/test_families.py::test_longcat_flash_...)
BIAS_SCALE = {"longcat_flash": 0.1}


# buffers that checkpoints store (growth counts them among the grown parameters): router biases (DeepSeek's,
# LFM2-MoE's), Gemma 4's layer_scalar, MiniMax's lightning-attention decay tables, DeepSeek-V4's hash-routing tables
STORED_BUFFERS = ("e_score_correction_bias", ".expert_bias", ".layer_scalar", ".slope_rate", ".query_decay",
                  ".key_decay", ".diagonal_decay", ".tid2eid")


def stored_buffers(model: torch.nn.Module) -> int:
    """The values of a model's buffers that its checkpoint stores (STORED_BUFFERS)."""
    return sum(b.numel() for name, b in model.named_buffers() if name.endswith(STORED_BUFFERS))


def tiny_config(family: str, tied: bool | None = None, **overrides):
    kwargs = dict(vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kwargs.update(TINY_CONFIGS[family])
    kwargs.update(overrides)
    if tied is not None:
        kwargs["tie_word_embeddings"] = tied
    return AutoConfig.for_model(family, **kwargs)


NORM_SUFFIXES = ("ln_1.weight", "ln_2.weight", "ln_f.weight", "ln_attn.weight", "ln_mlp.weight",
                 "_residual")  # Doge's residual gains: near 1 too


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Give every parameter random values, norms and biases included."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            owner = name.rsplit(".", 2)[-2] if "." in name else name  # the module holding it (DBRX's
            is_norm = "norm" in owner or name.endswith(NORM_SUFFIXES)  # norm_attn_norm also holds the attention)
            if param.ndim == 1 or is_norm:  # norm weights (Cohere's q/k norms are 2-D) and biases
                base = 1.0 if is_norm else 0.0  # keep norms near 1, biases small
                param.copy_(base + 0.3 * torch.randn(param.shape, generator=gen))
            else:
                param.copy_(0.2 * torch.randn(param.shape, generator=gen))
        # DeepSeek's (and LFM2-MoE's) router correction bias steers which experts run (ERNIE's is a parameter)
        for name, buffer in model.named_buffers():
            if name.endswith(("e_score_correction_bias", ".expert_bias")):
                buffer.copy_(0.3 * torch.randn(buffer.shape, generator=gen))
            if name.endswith(".layer_scalar"):  # Gemma 4 scales each block's output: an identity block needs 1
                buffer.copy_(1.0 + 0.3 * torch.randn(buffer.shape, generator=gen))
            if name.endswith(("vision_tower.std_bias", "vision_tower.std_scale")):  # Gemma 4 standardises soft tokens
                base = 1.0 if name.endswith("scale") else 0.0
                buffer.copy_(base + 0.3 * torch.randn(buffer.shape, generator=gen))
            if name.endswith(".tid2eid"):  # DeepSeek-V4's hash routing (zeros until a checkpoint loads): each token's
                experts = model.config.get_text_config().n_routed_experts  # own random top-k experts
                buffer.copy_(torch.stack([torch.randperm(experts, generator=gen)[:buffer.shape[1]]
                                          for _ in range(buffer.shape[0])]))


# Multimodal checkpoints (hyperclone.grow.wrapper): a tiny vision tower and projector around a tiny language model;
# IMAGE_TOKENS image tokens per 32x32 image, IMAGE_TOKEN their id
IMAGE_TOKEN, IMAGE_TOKENS = 90, 4
VIDEO_TOKEN = 93
QWEN_VL_TEXT = dict(vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1, eos_token_id=2)
TINY_MULTIMODAL: dict[str, dict] = {
    "gemma3": dict(
        text_config=dict(TINY_CONFIGS["gemma3_text"], vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        mm_tokens_per_image=IMAGE_TOKENS, image_token_index=IMAGE_TOKEN, boi_token_index=91, eoi_token_index=92),
    # Gemma 4 (text gemma4_text, bidirectional attention over each image's tokens): a tower of 8-pixel patches given
    # as the processor's flat patch lists with their (x, y) positions, (-1, -1) for padding, pooled 2x2 into soft tokens
    # (a 32x32 image: 4x4 patches, 4 tokens), scaled by sqrt(32) and standardised (std_bias, std_scale: randomised
    # below); embed_vision's weightless RMSNorm then embedding_projection write the residual stream; no audio tower
    "gemma4": dict(
        text_config=dict(TINY_CONFIGS["gemma4_text"], vocab_size=VOCAB, max_position_embeddings=64,
                         use_bidirectional_attention="vision"),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_key_value_heads=2,
                           head_dim=16, num_hidden_layers=1, patch_size=8, pooling_kernel_size=2,
                           position_embedding_size=16, standardize=True),
        audio_config=None, image_token_id=IMAGE_TOKEN, boi_token_id=91, eoi_token_id=92, video_token_id=VIDEO_TOKEN,
        audio_token_id=94, boa_token_id=95, eoa_token_index=96),
    "mistral3": dict(
        text_config=dict(TINY_CONFIGS["mistral"], model_type="mistral", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=40, num_attention_heads=2,
                           num_hidden_layers=1, image_size=32, patch_size=8, head_dim=16),
        image_token_index=IMAGE_TOKEN, spatial_merge_size=2, multimodal_projector_bias=True),
    # Mistral Large 4 (text mistral_large4_text, which transformers builds only inside this class: no causal LM of its
    # own): Mistral 3's vision tower and projector around latent attention without a q LoRA, a learned per-head query
    # scale s log(pos + 1) + b, YaRN rope with learned frequency factors (lerope.alpha: kept, as the tower), GLM-5's
    # indexer reading the residual stream through a LayerNorm (top 8 keys: the checks drop keys; layer 1 "shared"
    # reuses layer 0's), a NoPE layer pair (2, 3: their keys without rope parts), KV sharing (layers 1 and 3 attend to
    # layer 0's and 2's latent keys and values, with no kv_a projection of their own), a dense first layer then softmax
    # routing (top-2 of 4, always renormalised, scaled) with a shared expert; stored in Mistral's own names
    # (tok_embeddings, layers.N.attention.wq, experts.E.w1, output), as save_pretrained writes them
    "mistral_large4": dict(
        text_config=dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=40, num_attention_heads=6,
                         num_key_value_heads=6, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=8,
                         v_head_dim=6, num_hidden_layers=4, mlp_layer_types=["dense", "sparse", "sparse", "sparse"],
                         n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                         routed_scaling_factor=2.5, index_topk=8, index_head_dim=8, index_n_heads=4,
                         indexer_types=["full", "shared", "full", "full"], no_rope_layers=[1, 1, 0, 0],
                         kv_source_layers=[0, 0, 2, 2], vocab_size=VOCAB, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0,
                         rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                              original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                                              attention_factor=1.0)),
        vision_config=dict(model_type="pixtral", hidden_size=32, intermediate_size=40, num_attention_heads=2,
                           num_hidden_layers=1, image_size=32, patch_size=8, head_dim=16),
        image_token_index=IMAGE_TOKEN, spatial_merge_size=2, multimodal_projector_bias=True),
    "qwen3_5": dict(
        text_config=dict(TINY_CONFIGS["qwen3_5_text"], vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_heads=2, depth=1, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=16),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    "qwen3_5_moe": dict(
        text_config=dict(TINY_CONFIGS["qwen3_5_moe_text"], vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_heads=2, depth=1, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=16),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    # Qwen2-VL: its vision config's hidden_size is the width its merger writes (the text model's); the vision
    # tower's own is embed_dim. M-RoPE sections over head_dim / 2
    "qwen2_vl": dict(
        text_config=dict(TINY_CONFIGS["qwen2"], **QWEN_VL_TEXT,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], rope_theta=10000.0)),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=48, mlp_ratio=2, num_heads=2, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    # Qwen2.5-VL: a windowed vision block (one merged patch per window) and a full one
    "qwen2_5_vl": dict(
        text_config=dict(TINY_CONFIGS["qwen2"], **QWEN_VL_TEXT,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], rope_theta=10000.0)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, window_size=16,
                           fullatt_block_indexes=[1]),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    # EXAONE 4.5 (text exaone4: sliding and global attention, post-norms, plain 1-D positions): Qwen2.5-VL's windowed
    # vision tower with 2-D rope and grouped-query attention (2 query heads over 1 KV head); its merger's mlp.2 writes
    # the residual stream
    "exaone4_5": dict(
        text_config=dict(TINY_CONFIGS["exaone4"], model_type="exaone4", **QWEN_VL_TEXT),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=2, num_key_value_heads=1,
                           out_hidden_size=48, patch_size=8, spatial_merge_size=2, temporal_patch_size=2,
                           window_size=16, fullatt_block_indexes=[1]),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN),
    # Qwen3-VL: two DeepStack mergers, whose features are added after the language model's layers 0 and 1
    "qwen3_vl": dict(
        text_config=dict(TINY_CONFIGS["qwen3"], **QWEN_VL_TEXT, attention_bias=True,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], mrope_interleaved=True,
                                              rope_theta=10000.0)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    # Qwen3-VL-MoE: Qwen3-VL with every MLP a mixture of 4 experts (top-2), stored fused as transformers 5 writes them
    "qwen3_vl_moe": dict(
        text_config=dict(TINY_CONFIGS["qwen3"], **QWEN_VL_TEXT, attention_bias=True, moe_intermediate_size=40,
                         num_experts=4, num_experts_per_tok=2,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], mrope_interleaved=True,
                                              rope_theta=10000.0)),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48,
                           patch_size=8, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=16,
                           deepstack_visual_indexes=[0, 1]),
        image_token_id=IMAGE_TOKEN, video_token_id=93, vision_start_token_id=91, vision_end_token_id=92),
    # GLM-4.1V (text glm4v_text: GLM-4's layers, head_dim the hidden size / heads, half-rotary M-RoPE): the vision
    # tower's MLPs, its downsampling convolution and its merger (a LayerNorm inside) are out_hidden_size wide, the
    # language model's hidden size; 4x4 patches of 2 frames x 8x8 pixels merged 2x2 into 4 image tokens
    "glm4v": dict(
        text_config=dict(hidden_size=48, intermediate_size=80, num_attention_heads=3, num_key_value_heads=1,
                         num_hidden_layers=2, **QWEN_VL_TEXT,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], partial_rotary_factor=0.5,
                                              rope_theta=10000.0)),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48,
                           image_size=32, patch_size=8, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, image_start_token_id=91, image_end_token_id=92,
        video_start_token_id=94, video_end_token_id=95),
    # GLM-4.5V (text glm4v_moe_text: GLM-4.5's dense first layer then sigmoid-routed experts with a shared expert,
    # without q/k norms; head_dim stated, 6 x 16 wider than the hidden size as in the releases): GLM-4.1V's vision tower
    "glm4v_moe": dict(
        text_config=dict(hidden_size=48, intermediate_size=80, moe_intermediate_size=40, num_attention_heads=6,
                         num_key_value_heads=2, head_dim=16, num_hidden_layers=2, first_k_dense_replace=1,
                         n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, routed_scaling_factor=2.5,
                         attention_bias=True, **QWEN_VL_TEXT,
                         rope_parameters=dict(rope_type="default", mrope_section=[2, 1, 1], partial_rotary_factor=0.5,
                                              rope_theta=10000.0)),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=40, num_heads=2, out_hidden_size=48,
                           image_size=32, patch_size=8, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN, image_start_token_id=91, image_end_token_id=92,
        video_start_token_id=94, video_end_token_id=95),
    # LLaVA 1.5: a CLIP vision tower (2x2 patches of 16 pixels, the class token dropped), a two-layer projector
    "llava": dict(
        text_config=dict(TINY_CONFIGS["llama"], model_type="llama", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=40, num_attention_heads=2,
                           num_hidden_layers=2, image_size=32, patch_size=16),
        image_token_index=IMAGE_TOKEN, image_seq_length=IMAGE_TOKENS),
    # LLaVA-NeXT (text Mistral, as llava-v1.6-mistral): anyres tiles of 32x32 pixels (2x2 patches of 16, the class token
    # dropped); an image of 32x64 takes a base tile and a 1x2 grid of tiles, the grid's 2 rows of 4 features each
    # closed by image_newline: 4 + 2 x 5 = 14 image tokens
    "llava_next": dict(
        text_config=dict(TINY_CONFIGS["mistral"], model_type="mistral", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=40, num_attention_heads=2,
                           num_hidden_layers=2, image_size=32, patch_size=16),
        image_token_index=IMAGE_TOKEN, image_grid_pinpoints=[[32, 64], [64, 32]]),
    # LLaVA-OneVision (text Qwen2): a SigLIP tower (no class token); anyres_max_1 makes the 1x2 grid's 2x4 features
    # more than allowed, so they are interpolated to 1 row of 2 before image_newline: 4 + 1 x 3 = 7 image tokens
    "llava_onevision": dict(
        text_config=dict(TINY_CONFIGS["qwen2"], model_type="qwen2", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=40,
                           num_attention_heads=2, num_hidden_layers=2, image_size=32, patch_size=16,
                           vision_use_head=False),
        image_token_index=IMAGE_TOKEN, video_token_index=93, image_grid_pinpoints=[[32, 64], [64, 32]],
        vision_aspect_ratio="anyres_max_1"),
    # LLaVA-NeXT-Video (text Llama, as the 7B releases): LLaVA-NeXT's anyres images (14 image tokens each) and videos
    # whose 32x32 frames' 2x2 patches the resampler pools into one token each; its conv pooling (the releases' is
    # average, with no parameters) gives the resampler tensors, kept as the vision tower's
    "llava_next_video": dict(
        text_config=dict(TINY_CONFIGS["llama"], model_type="llama", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=40, num_attention_heads=2,
                           num_hidden_layers=2, image_size=32, patch_size=16),
        image_token_index=IMAGE_TOKEN, video_token_index=VIDEO_TOKEN, image_grid_pinpoints=[[32, 64], [64, 32]],
        spatial_pool_mode="conv"),
    # LFM2-VL (text LFM2): a SigLIP2 tower of 4x4 patches of 8 pixels (flattened, with their grid), unshuffled 2x2
    # into 4 image tokens; the projector's LayerNorm and linear_1 (its own width, 40) are kept, its linear_2 writes
    # the residual stream
    "lfm2_vl": dict(
        text_config=dict(TINY_CONFIGS["lfm2"], model_type="lfm2", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="siglip2_vision_model", hidden_size=32, intermediate_size=40,
                           num_attention_heads=2, num_hidden_layers=1, patch_size=8, num_patches=16,
                           vision_use_head=False),
        image_token_id=IMAGE_TOKEN, projector_hidden_size=40, downsample_factor=2),
    # Aya Vision (text Cohere2): a SigLIP tower of 4x4 patches of 8 pixels, pixel-shuffled 2x2 into 4 image tokens; the
    # projector's LayerNorm and linear_1 are kept: its width, alignment_intermediate_size, left out as some configs
    # do, is the text config's hidden size, which the grown config then states
    "aya_vision": dict(
        text_config=dict(TINY_CONFIGS["cohere2"], model_type="cohere2", vocab_size=VOCAB, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=40,
                           num_attention_heads=2, num_hidden_layers=1, image_size=32, patch_size=8,
                           vision_use_head=False),
        image_token_index=IMAGE_TOKEN, downsample_factor=2),
    # PaliGemma (text Gemma; PaliGemma 2's Gemma 2 in tests/test_multimodal.py): a SigLIP tower of 2x2 patches of 16
    # pixels, one linear projector of projection_dim (the text hidden size) rows; image features enter the residual
    # stream unscaled, text embeddings scaled by sqrt(hidden)
    "paligemma": dict(
        text_config=dict(TINY_CONFIGS["gemma"], model_type="gemma", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=40,
                           num_attention_heads=2, num_hidden_layers=1, image_size=32, patch_size=16,
                           vision_use_head=False),
        image_token_index=IMAGE_TOKEN, projection_dim=48, hidden_size=48),
    # Command A Vision (text Cohere2): Aya Vision's projector without its LayerNorm, the SwiGLU's linear_1 as wide as
    # alignment_intermediate_size (40, its own width: kept); transformers 5's names in its releases and in memory
    "cohere2_vision": dict(
        text_config=dict(TINY_CONFIGS["cohere2"], model_type="cohere2", vocab_size=VOCAB, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=40,
                           num_attention_heads=2, num_hidden_layers=1, image_size=32, patch_size=8,
                           vision_use_head=False),
        image_token_id=IMAGE_TOKEN, downsample_factor=2, alignment_intermediate_size=40),
    # InternVL 3.5 (text Qwen3): 4x4 patches of 8 pixels (the class token dropped), pixel-shuffled 2x2 into 4 image
    # tokens of 4 x 32 channels; the projector's LayerNorm over them is kept
    "internvl": dict(
        text_config=dict(TINY_CONFIGS["qwen3"], model_type="qwen3", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        image_token_id=IMAGE_TOKEN, image_seq_length=IMAGE_TOKENS),
    # Idefics3 and SmolVLM (text Llama): a SigLIP-like tower of 4x4 patches of 8 pixels, pixel-shuffled 2x2 into 4
    # image tokens that the connector's one matrix projects
    "idefics3": dict(
        text_config=dict(TINY_CONFIGS["llama"], model_type="llama", vocab_size=VOCAB, max_position_embeddings=64),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8),
        scale_factor=2, image_token_id=IMAGE_TOKEN),
    # Llama 4 (text llama4_text: a dense first layer, then experts): a tower of 4x4 patches of 8 pixels (the class token
    # dropped), pixel-shuffled 2x2 into 4 image tokens of 4 x 32 channels (its MLP's input, intermediate_size) by the
    # tower's own vision_adapter MLP (40 wide: vision_output_dim); the projector's one matrix, linear_1, writes the
    # residual stream. Its language model is a whole Llama4ForCausalLM, tied by the text config alone
    "llama4": dict(
        text_config=dict(TINY_CONFIGS["llama4_text"], vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=1,
                           image_size=32, patch_size=8, pixel_shuffle_ratio=0.5, projector_input_dim=40,
                           projector_output_dim=40, vision_output_dim=40),
        image_token_index=IMAGE_TOKEN, boi_token_index=91, eoi_token_index=92),
    # Llama 3.2 Vision (text mllama_text_model: Llama's self-attention layers and a gated cross-attention layer at
    # cross_attention_layers, whose k/v read the projected image features; embed_tokens holds vocab_size + 8 rows): a
    # tiled tower (32x32 tiles of 2x2 patches of 16 pixels and a class token, up to 2 tiles per image) whose output is
    # its last and its layer 0's hidden states side by side (vision_output_dim 64), projected to the text width by
    # multi_modal_projector
    "mllama": dict(
        text_config=dict(hidden_size=48, intermediate_size=80, num_attention_heads=6, num_key_value_heads=2,
                         num_hidden_layers=2, cross_attention_layers=[1], vocab_size=VOCAB,
                         max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=40, attention_heads=2, num_hidden_layers=2,
                           num_global_layers=1, intermediate_layers_indices=[0], vision_output_dim=64, image_size=32,
                           patch_size=16, max_num_tiles=2, supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
        image_token_index=IMAGE_TOKEN),
}
TINY_MULTIMODAL["smolvlm"] = TINY_MULTIMODAL["idefics3"]
# Idefics2 (text Mistral): a SigLIP-like tower of 4x4 patches of 8 pixels, whose 16 features per image the connector's
# SwiGLU (text intermediate_size wide) projects to the text width and its perceiver resampler (2 layers of attention
# from 4 latents over the features and themselves, 2 query heads and 1 KV head of 8, an MLP 4 x the text width, RMSNorms
# over the text width) turns into 4 image tokens; the perceiver's eps (1e-6, its class default) differs from the text
# model's, and its hidden_size is stated as the releases' configs may not
TINY_MULTIMODAL["idefics2"] = dict(
    text_config=dict(TINY_CONFIGS["mistral"], model_type="mistral", vocab_size=VOCAB, max_position_embeddings=64,
                     rms_norm_eps=1e-5),
    vision_config=dict(hidden_size=32, intermediate_size=40, num_attention_heads=2, num_hidden_layers=1,
                       image_size=32, patch_size=8),
    perceiver_config=dict(hidden_size=48, resampler_n_latents=IMAGE_TOKENS, resampler_depth=2, resampler_n_heads=2,
                          resampler_head_dim=8, num_key_value_heads=1),
    image_token_id=IMAGE_TOKEN)
# Apertus 1.5 (text apertus1p5_text): no projector; a VQ image tokenizer (3 stages of 32 channels, an 8x8 image: 2x2
# codes, the argmax over its 8-entry codebook) whose codes, offset by image_token_offset (80..87, beyond the test
# texts' ids), the text embedding reads in place of the image tokens; a tiny WavTokenizer audio encoder (its codebook
# 88..95), kept unchanged like the image tokenizer
TINY_MULTIMODAL["apertus1p5"] = dict(
    text_config=dict(TINY_CONFIGS["apertus1p5_text"], vocab_size=VOCAB, max_position_embeddings=64),
    vision_config=dict(codebook_size=8, embed_dim=8, latent_channels=8, base_channels=32, channel_multiplier=[1, 1, 1],
                       num_res_blocks=1, attn_resolutions=[4], resolution=8),
    audio_config=dict(model_type="wavtokenizer_encoder", num_filters=4, upsampling_ratios=[2, 2], hidden_size=8,
                      codebook_size=8, codebook_dim=8, num_lstm_layers=1),
    image_token_id=IMAGE_TOKEN, audio_token_id=94, image_token_offset=80, audio_token_offset=88)
TIED_BY_TEXT = ("llama4", "mllama")  # multimodal types whose language model ties by its text config's value
UNTIED_MULTIMODAL = ("mllama",)  # whose model class never ties the output projection to the embedding
# image tokens per image where not IMAGE_TOKENS (LLaVA-NeXT's and OneVision's anyres grids with image_newline)
IMAGE_TOKENS_OF = {"llava_next": 14, "llava_onevision": 7, "llava_next_video": 14}
# video frames (32x32 pixels, one video token each) per model type whose image check also runs a video
VIDEO_FRAMES_OF = {"llava_next_video": 2}


def make_tiny_multimodal(model_type: str, folder: Path, tied: bool | None = None, dtype=torch.float32,
                         seed: int = 0, **overrides) -> Path:
    """Write a tiny random multimodal checkpoint (every parameter random) to `folder` and return the folder;
    `overrides` replace TINY_MULTIMODAL's config keys (a text_config of another family)."""
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(seed)
    kwargs = {**TINY_MULTIMODAL[model_type], **overrides}
    if tied is not None:
        kwargs["tie_word_embeddings"] = tied
        if model_type in TIED_BY_TEXT:
            kwargs["text_config"] = dict(kwargs["text_config"], tie_word_embeddings=tied)
    model = AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **kwargs))
    randomize_(model, seed)
    with warnings.catch_warnings():  # Llama 4's vision rope table, a complex buffer that is not saved (loading
        warnings.filterwarnings("ignore", "Casting complex values to real")  # computes it again), is cast too
        model.to(dtype)
    model.save_pretrained(folder)
    return Path(folder)


def make_tiny(family: str, folder: Path, tied: bool | None = None, dtype=torch.float32, seed: int = 0,
              **overrides) -> Path:
    """Write a tiny random checkpoint of `family` to `folder` and return the folder."""
    torch.manual_seed(seed)
    config = tiny_config(family, tied=tied, **overrides)
    model = causal_lm_auto(config).from_config(config)  # Mistral 4: an image-text auto class holds its causal LM
    randomize_(model, seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name:
                param.mul_(MATRIX_SCALE.get(family, 1.0))
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                buffer.mul_(BIAS_SCALE.get(family, 1.0))
    model.to(dtype)
    model.save_pretrained(folder)
    return Path(folder)


def assert_out_of_core_catches(src: Path, out: Path, corrupt: str, layers: int, tolerance: float = 1e-4) -> None:
    """Out-of-core verify of an exact growth passes block by block (`layers` blocks); with one grown tensor
    (`corrupt`, a tensor of model.layers.<i>) 5% off it fails at block i and no earlier one, as in memory."""
    from safetensors.torch import load_file, save_file

    from hyperclone.grow.verify import load_causal_lm
    from hyperclone.grow.verify_blocks import verify_out_of_core

    result = verify_out_of_core(src, out)
    assert result.ok and len(result.block_rel_err) == layers, result
    assert max(result.block_rel_err) <= tolerance and result.rel_err <= tolerance
    tensors = load_file(out / "model.safetensors")
    tensors[corrupt][0] *= 1.05
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    block = int(corrupt.split(".")[2])
    result = verify_out_of_core(src, out)
    assert not result.ok and result.worst_block == block and result.block_rel_err[block] > tolerance, result
    assert all(error <= tolerance for error in result.block_rel_err[:block])
    assert not compare_tiny(load_causal_lm(src), load_causal_lm(out), tolerance=tolerance).ok
