"""Architecture knowledge as data: one JSON table per model family.

Each table names the config keys that hold the growable dimensions and lists every tensor of a
checkpoint as a name template (``{layer}`` stands for the block index) with the dimension kind of
each axis. The loader is strict: an unknown key, axis kind or role is an error, so a typo in a
table fails loudly instead of being ignored.

Axis kinds (each grows through its own map, see hyperclone.grow.axis_map and hyperclone.grow.plan):
  hidden           residual width
  q, k, v          query heads x head_dim, KV heads x head_dim (q/k carry the head_dim scaling), KV heads x head_dim
  attn             the attention output read by the output projection: query heads x v's head_dim
  qkv_interleaved  GPT-NeoX fused [heads, 3, head_dim] (heads outermost)
  qkv_grouped      Falcon (new decoder architecture) fused [kv_heads, group + 2, head_dim]: each KV group's
                   query heads, then its key head, then its value head
  qkv_sharded      CodeGen's fused [mp_num = 4 shards, 3, hidden / 4]: each model-parallel shard's slice of the query,
                   value and key widths in turn; every head is copied as in q and v, the hidden size must stay a
                   multiple of 4 (refused in one line otherwise)
  heads, kv_heads  one position per query head / KV head (Cohere's q/k norm weights [heads, head_dim])
  one              a single position, kept (Apertus' xIELU parameters of shape [1])
  ffn              MLP width (in a mixture of experts: each routed expert's width)
  ffn_pairs        an MLP's gate and up projections interleaved, [ffn, 2]: per MLP neuron its gate then its up value
                   (GPT-OSS gate_up_proj); each neuron's pair moves with it
  dense_ffn        the width of a MoE family's dense MLP layers (Qwen-MoE intermediate_size); grows with ffn
  shared_ffn       the shared expert's width (Qwen2-MoE, GraniteMoeShared); grows with ffn; 0 in the config (as
                   an experts count of 0): the model has none, and tensors with that axis are neither needed nor
                   allowed
  experts          one position per routed expert (the router's output): kept
  zero_experts     one position per zero-computation expert, the router's rows after the routed experts'
                   (LongCat-Flash's zero_expert_num: a chosen one adds the input, weighted): kept; an empty
                   section where the config has none
  experts_ffn      every expert's MLP width, the experts flattened into one axis, [experts x ffn] (DBRX's w1, v1, w2 of
                   [experts x ffn, hidden]: each expert's rows in turn): each expert's neurons are copied inside its
                   own block, the experts kept
  mla_q            latent attention (DeepSeek MLA): query heads x (head_dim + qk_rope), head_dim being the
                   config's qk_nope_head_dim; each head's no-rope and rope parts move together with their head
  mla_kv           latent attention's key/value up-projection: heads x (head_dim + v_head_dim)
  mla_attn         latent attention's output read by o_proj: heads x v_head_dim
  mla_kv_nope      latent attention's key/value up-projection in a NoPE layer (Mistral Large 4's no_rope_layers 0:
                   its keys carry no rope part, so each head's no-rope key is head_dim + qk_rope wide):
                   heads x (head_dim + qk_rope + v_head_dim), each head's block copied whole
  q_lora, kv_lora, qk_rope   latent attention's compressed widths and its shared rope key: kept
  index_q, index_k, index_heads   DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2): its query heads x
                   its head width (wq_b's rows, read from the kept q LoRA latent), its single key head's width (wk's
                   rows, k_norm), one position per indexer head (weights_proj's rows): kept, as are the config's
                   index_heads and index_head_dim slots (its scores scale by both, so neither may grow)
  ssm_inner        a Mamba2 mixer's inner width, heads x head_dim (its gate z, its x inside xBC, its gated norm, the
                   input of out_proj): heads are copied, each with its slice, ordered group by group so that every
                   copy stays in its source head's B/C group
  ssm_heads        one position per Mamba2 head (in_proj's dt rows, dt_bias, A_log, D): copied with their heads
  ssm_groups       a Mamba2 mixer's B or C section, n_groups x d_state: kept
  ssm_channels     a Mamba (Mamba1) mixer's inner channels, expand x hidden (its x and gate z from in_proj, conv1d,
                   dt_proj's rows and bias, A_log, D, the input of x_proj and of out_proj): every channel runs its own
                   scan over the kept state, so plain copies (scale 1, any number of each) stay exact; x_proj and
                   out_proj divide by the copies
  ssm_state        one position per state of a Mamba mixer (A_log's columns, x_proj's B and C rows): kept
  dt_rank          a Mamba mixer's low-rank time step (x_proj's dt rows, dt_proj's input): kept
  conv_kernel      the width of a depthwise causal convolution (conv1d weight [channels, 1, kernel]): kept
  embed            OPT word_embed_proj_dim: grows with hidden when equal to it, else kept
  lru, lru_blocks, lru_block   RecurrentGemma's RG-LRU (the ``lru`` slot, lru_width): its channels are the heads
                   slot's number of blocks x a block width (lru_width / heads), each block with its own input and
                   recurrence gate matrices [block, block] (lru_blocks: one position per block; lru_block: within a
                   block, kept). Every channel runs its own recurrence, so whole blocks copied in tile order (scale 1,
                   the gates copied with their block) compute their source block exactly; the blocks grow with the
                   heads, the block width is kept, and readers of the channels (linear_out) divide by the copies
  conv_inner       the channels of a gated short convolution as wide as the hidden size (LFM2's in_proj emits B, C and
                   x, each [hidden]; conv and out_proj read them): plain copies of the channels, scale 1, so B·x and
                   C·conv(·) stay exact per channel; out_proj divides by the copies
  moe_latent       the width a latent MoE's experts read and write (Nemotron-H moe_latent_size, between
                   fc1_latent_proj and fc2_latent_proj): kept; without a latent size the experts read the residual
                   stream and it is the hidden size
  q_gate           a gated attention's query projection (Qwen3.5, Qwen3-Next): per query head its query then its
                   output gate, [heads, 2 x head_dim]; the gate multiplies the head's output, so it follows v's width
  lin_qk, lin_v, lin_v_heads, lin_v_dim, lin_qkvz, lin_ba   a gated DeltaNet's widths (linear attention; Qwen3.5,
                   Qwen3-Next, Kimi Linear's delta attention with one key and value head count): key and value heads
                   copied as attention heads are (hyperclone.grow.linear_attention)
  expert_ffn       the routed experts' width where ffn is an MLP every layer has beside them (Gemma 4: intermediate_size
                   dense, moe_intermediate_size each expert); grows with ffn; absent (None) in a config without experts
  global_q, global_k, global_v, global_attn, global_head_dim   q, k, v, attn and head_dim of the layers a table's
                   ``per_layer_attention`` names (Gemma 4's full attention): their own head_dim (kept) and KV heads
                   (grown with the query heads), with their own GQA maps over the same query heads
  ffn_double       an MLP twice as wide as ffn (Gemma 4's use_double_wide_mlp in its KV-shared layers): two halves,
                   each grown as ffn
  per_layer_input, per_layer_packed, per_layer_vocab   per-layer embeddings (Gemma 4 E2B/E4B): each layer's width
                   (hidden_size_per_layer_input), the layers' slices packed in one axis (layers x that width:
                   embed_tokens_per_layer's columns, per_layer_model_projection's rows) and their vocabulary: kept,
                   except that under depth growth the packed axis follows the layers, every grown layer's slice a copy
                   of its source layer's (an identity block's too: its per_layer_projection, a residual writer, is
                   zeroed, so its slice is never read into the residual stream)
  altup_inputs, altup_coefs, laurel_rank   Gemma 3n's AltUp streams (altup_num_inputs: the modality router's rows,
                   correction_coefs), its prediction coefficients (streams x streams) and LAuReL's low-rank width
                   (laurel_rank): kept. AltUp mixes the streams channel by channel and rescales each to the active
                   stream's mean square over the hidden size, which the RMSNorm hidden map keeps at any width
  vocab, positions, head_dim                               kept
  output_vocab     an output projection's rows where it is pruned to fewer than the vocabulary (Apertus 1.5's
                   output_vocab_size; the vocabulary where the config leaves it null): kept
  adapter_rank     the rank of per-layer LoRA adapters on a shared block's linear layers (Zamba2's adapter_rank): kept
  decay_block      the tokens of one block of lightning attention (MiniMax's block_size): the axes of the decay tables
                   its layers store as buffers (slope_rate, query_decay, key_decay, diagonal_decay), kept with the heads
  vocab_rows       an embedding's rows where it holds more than the vocabulary: vocab plus the family's
                   ``vocab_offset`` (Mllama's embed_tokens has vocab_size + 8 rows, its image token's among them, where
                   its lm_head has vocab_size): kept
  hc_streams, hc_pairs, hc_hidden   manifold-constrained hyper-connections (DeepSeek-V4's hc_mult residual streams):
                   one position per stream and per pair of streams (the rows of the mixing projections: pre, post and
                   comb weights), kept; the streams side by side, each hidden wide (what the projections read): each
                   stream's block grows by the hidden map, so they read the source's pre, post and comb weights
  o_latent, o_group_in   a grouped output projection (DeepSeek-V4's o_a_proj [o_groups x o_lora_rank, heads / o_groups
                   x head_dim], block-diagonal over the groups of heads, and o_b_proj reading every group's latent):
                   the groups grow with the heads, each grown group a copy of a source group whole (its rows copied,
                   o_b_proj dividing by the copies), and one group's heads x head_dim is kept
  csa_window, hca_window   the tokens a KV compressor pools into one entry (DeepSeek-V4's compress_rates of its
                   compressed sparse and heavily compressed attention layers: position_bias rows): kept
  hash_top_k       the experts a hash-routed layer sends every token to (DeepSeek-V4's tid2eid [vocab,
                   num_experts_per_tok], an integer table kept as stored)
A name may also contain ``{expert}``: one tensor per routed expert (0 .. experts - 1, the config's
``experts`` slot), the per-expert layout transformers' save_pretrained writes and Hub checkpoints store. The
optional ``top_k`` slot names the config key of the experts each token is routed to (num_experts_per_tok when
absent; read when experts are split, hyperclone.grow.segment).
A name may also contain ``{adapter}``: a shared block's adapter slot, one per hybrid layer that reuses it, numbered by
hybrid layer (Zamba2's ``linear_q_adapter_list.{adapter}``: transformers writes the shared blocks, their adapters
inside, in the first num_mem_blocks hybrid layers only, so such rules are optional); expanded over 0 .. layers - 1 and
kept under growth, only the stored ones are read.
Attention and MLP are optional: a family whose table has no ``heads`` slot has no attention (Mamba, Mamba2; no
``kv_heads`` or ``head_dim`` slot then, no attention axis kind, and --heads, --kv-heads, --head-dim are refused), one
without an ``ffn`` slot no MLP (no ffn axis kind; the --ffn factor has nothing to grow, --ffn-size is refused).
Mamba2 slots (hybrid state-space families): ``ssm_heads``, ``ssm_head_dim``, ``ssm_groups``, ``ssm_state``,
``conv_kernel`` name the mixer's config keys; ``ssm_inner`` the key of an explicit inner width (Falcon-H1's
mamba_d_ssm; null there means expand x hidden) and ``ssm_expand`` the key of the expansion factor when the inner width
is expand x hidden. Mamba2 heads grow by the hidden size's factor (hyperclone.grow.plan._ssm_heads).
Mamba (Mamba1) slots: ``dt_rank`` (the time step's rank; a config's "auto" is ceil(hidden / 16) as the config classes
compute it, and the grown config states the source's number), ``ssm_state``, ``conv_kernel`` and ``ssm_expand`` (the
inner width is expand x hidden, so the channels grow by the hidden size's factor; ``ssm_inner`` may name the key of
the inner width the config also states, rewritten with it), without the Mamba2 head slots.
Gated DeltaNet slots: ``lin_k_heads``, ``lin_v_heads``, ``lin_k_dim``, ``lin_v_dim`` (all four, with ``conv_kernel``):
the key and value head counts grow by the hidden size's factor, the head widths are kept (Kimi Linear names one
key for both counts and one for both widths).
DeepSeek-V4 slots: ``hc_streams`` (hc_mult), ``o_lora`` (o_lora_rank), ``csa_window`` and ``hca_window`` (keys into
the compress_rates dict, with dots), ``hash_top_k`` (num_experts_per_tok, tid2eid's width) are kept; ``o_groups`` grows
with the heads, the heads per group kept (the grown config states it; heads that are not whole groups are refused in
one line).
``in_memory``: [name, section, sections] where transformers holds the tensor under another name in memory
(transformers 5 fuses experts: ``mlp.experts.gate_up_proj`` [experts, 2 x ffn, hidden] stacks every expert's
gate (section 0 of 2) and up projection (section 1) rows); out-of-core verify loads blocks in that layout.
``norm_offset`` (on a norm): the offset that norm applies where it is not the family's ``norm_offset`` (Qwen3.5's
gated RMSNorm multiplies by its stored weight where the family's other norms apply 1 + weight).
A fused axis is written as sections joined by "+", e.g. "q+kv+kv" (Phi-3 qkv_proj); each section
is grown on its own and the results are concatenated in the same order.

``contract`` is the axis a linear layer sums over (1 for nn.Linear [out, in], 0 for GPT-2's Conv1D
[in, out]; a matrix's may be fused, as Zamba2's "hidden+hidden", read through its sections' maps concatenated);
it is divided among its copies so that n copies of an input sum back to one. A stack of expert
matrices stored as one tensor [experts, out, in] (Granite's ``input_linear``) has contract 2, one stored
[experts, in, out] (GPT-OSS ``gate_up_proj`` and ``down_proj``, applied as x @ W[e]) contract 1: each expert's matrix
grows on its own and the experts are kept. ``may_be_transposed`` (on such a stack): the checkpoint may store the last
two axes swapped (Qwen3-VL-MoE: transformers 5's save_pretrained writes [experts, out, in], the Hub releases
[experts, in, out]); told apart by shape as transformers' own loader does (``Transpose(1, 2, check_dims=True)`` in
its conversion mapping): the layout written in the table when the shape fits it, else the swapped one. The grown
tensor keeps the source's layout.
Roles: ``embedding`` (token embedding; may carry a multiplier and be tied to the output),
``lm_head`` (the untied output projection), ``final_norm`` (the last norm before the output, the
place where tied embeddings are rescaled), ``norm`` (any other norm weight or bias), ``weight``
(linear weights and biases, learned position embeddings), ``router`` (a MoE router: reads the residual
stream, one logit per expert) and ``shared_gate`` (Qwen2-MoE's sigmoid gate of the shared expert); a router
and a shared gate grow like any linear layer reading the residual stream, and their outputs are kept.

A config key with dots reaches into a nested config: ``attn_config.kv_n_heads`` (DBRX's sub-configs) is read from the
config object's attn_config and written into config.json's attn_config object (hyperclone.grow.families.config_value,
set_config_value); config_aliases and refusals may name such keys too.

Family-level fields: ``norm`` (rmsnorm | layernorm: which statistics growth must preserve),
``norm_eps_key`` (the config key of the norms' epsilon, null when the model hard-codes it),
``rope`` (rotary embeddings: head_dim may only grow without them), and optionally ``refuse``: a list of
``{"key": config key, "equals": value, "reason": text}``; a source whose config has that value is refused
with the reason (a layout or feature the table does not describe exactly, e.g. Falcon's ALiBi). With
``"unless": [values]`` instead of ``equals``, any value outside the list is refused (Qwen-MoE's dense layers); with
``"contains": value``, a config list holding that value is refused;
with ``"tensor": regex`` instead of ``key``, a checkpoint holding a tensor whose name matches is refused. A key's
refusal may add ``"when": {other key: value, ...}``: it then applies only where those keys have those values too
(Falcon refuses multi_query false only in the old decoder architecture).
``slot_defaults``: ``{slot: other slot}`` for MLP widths (dense_ffn, shared_ffn, expert_ffn) a config may leave null
where the class then uses the other slot's width (Cohere2-MoE's dense layers are intermediate_size wide without
prefix_dense_intermediate_size); the grown config states the grown width. ``last_layer_kind``: a layer kind the
config class forces on the last layer whatever the config says (Gemma4TextConfig makes it full attention): depth
growth whose last layer would be of another kind is refused in one line.
``layer_kinds`` (hybrid and partly-dense models): how the config says which kind each block is; a tensor rule with
``"layers": [kinds]`` exists only in blocks of those kinds (hyperclone.grow.layer_kinds).
``ffn_auto_adjust``: {"flag", "multiplier", "multiple_of"} config keys when ffn's config value is not the MLP's width
(LFM2): with the flag true the width is multiple_of x ceil(multiplier x int(2/3 x value) / multiple_of) (no rounding
without a multiplier); the grown config states the width itself, with the flag false.
``ffn_config_factor``: k where ffn's config value is k x the MLP's width (RecurrentGemma's MLP is intermediate_size // 2
wide: k = 2); the grown config states k x the grown width. ``embedding_scale``: "sqrt_hidden" where the model multiplies
its embeddings by sqrt(hidden_size) (Gemma), "sqrt_hidden_bf16" where that factor is rounded to bfloat16 whatever the
model's dtype (RecurrentGemma's normalizer buffer), "none" elsewhere.
``multi_token_prediction``: how the family's releases store multi-token prediction (MTP) weights, which
transformers does not load (its ``_keys_to_ignore_on_load_unexpected``): ``{"tensor": regex}`` (Qwen3.5's and
Qwen3-Next's ``mtp.*``, ERNIE 4.5's ``mtp_*``) or ``{"layers_beyond": true}`` (DeepSeek-V3's and GLM-4.5's extra
decoder layer, ``model.layers.N.*`` with N at or past num_hidden_layers). Growth leaves them out of the grown
checkpoint, as transformers' load and save_pretrained would, and says so in the plan's notes.
``config_aliases``: {alias: key} config keys the config class reads in place of a key growth writes (LFM2's releases
state tie_embedding and block_ff_dim, which Lfm2Config pops over tie_word_embeddings and intermediate_size): a grown
config that changes the key writes its value into the alias too, so the class reads the grown value.
``multi_query``: the config key of a multi-query flag (GPT-BigCode's multi_query): when it is true the model has one
KV head, which every query head reads; growth copies query heads and keeps that one KV head (the config cannot say
more), so the k and v sections of the fused projection keep their width and read the grown residual stream. Written
``{"flag": key, "when": {other key: value, ...}}``, the flag counts only where those keys have those values (Falcon's
multi_query, which its config defaults to true, means one KV head only in the old decoder architecture). Written
``true``, the model has one KV head whatever its config says (DeepSeek-V4's key-value head, shared by every query
head).
``rmsnorm_key``: a config key that, where the config sets it (not null), makes every norm an RMSNorm with that
epsilon in place of the table's ``norm`` and ``norm_eps_key`` (Cohere2-MoE: LayerNorms without bias by default,
RMSNorms where rms_norm_eps is set); Family.for_config resolves it.
``unscaled_attention``: true where the attention scores are q.k without the 1/sqrt(head_dim) scale (GPT-Neo): a
grown head_dim would change them, so head_dim may not grow (grow the number of heads instead).
``layer_runs``: the config key of a per-layer pattern stated as runs, [[pattern, repeats], ...] (GPT-Neo's
attention_types, which its config class expands into one entry per layer): depth growth writes the grown layers'
entries as one run, [[entries, 1]].
``per_layer_attention``: {"layers": [kinds], "head_dim": key, "kv_heads": key}: layers of those kinds (layer_kinds)
have their own head_dim and KV heads (Gemma 4's full-attention layers). transformers 5 holds them as a heterogeneous
config's ``per_layer_config`` {layer: {head_dim, num_key_value_heads}} (config.json after save_pretrained; the Hub's
configs state the two keys instead, which the config class turns into it): each layer's pair is read from there (a
config object's per-layer view, or the config dict's overrides over the global values), every such layer must have
the same pair and every other layer the global one; growth keeps that head_dim, grows those KV heads with the query
heads, and writes both forms (the keys and per_layer_config, following the layers under depth growth). A config
object with per-layer overrides answers config_value with its global values. Written
{"layers": [kinds], "kv_heads_factor": n}, the layers have the global head_dim and n times the global KV heads, which
the model class derives and no key states (MiMo-V2-Flash's sliding layers, twice the KV heads of its full layers):
their KV heads grow with the query heads and must stay n times the grown global KV heads.
Tensor keys ``when`` ({config key: value, ...}: the model has the tensor only where the config has those values,
compared as refusals' ``when``; Family.for_config drops the others: Gemma 4's v_proj of full-attention layers only
without attention_k_eq_v, its experts only with enable_moe_block) and ``hidden_power`` (p, on a norm or a
weight, emitted or contracting: the model multiplies the tensor's effect by hidden_size ** p, a factor of the width,
as Gemma 4's router multiplies its input and its per_layer_model_projection its output by hidden_size ** -0.5; growth
multiplies the grown tensor by (old / new hidden) ** p, so the product is the source's). Tensor key ``kv_shared``
(true / false): the tensor exists only in the last layers that reuse earlier layers' keys and values, or only in the
others; the family key ``kv_shared_layers`` names the config key of their count (Gemma 4's num_kv_shared_layers),
each reading the keys and values of the last earlier layer of its kind before them. Under depth growth
(hyperclone.grow.kv_sharing) an identity block after the last layer before them joins them (the count grows; one that
follows that layer copies the first shared layer, for their tensors), one before it may not follow the last layer of
its kind (it would compute the keys they read): such --insert-after positions are refused in one line naming the
allowed ones, the default spread moves to the nearest allowed position, and --depth-mode stack is refused.
Tensor key ``layernorm`` (true, on a norm over the hidden axis of an RMSNorm family): the norm subtracts the mean
(Mistral Large 4's indexer q_input_norm, a LayerNorm over the residual stream), which the family's weighted copies of a
hidden size not a whole multiple do not keep: such a hidden size is refused in one line.
A refusal with ``"depth": true`` applies only where the number of layers grows.
An ffn config value that is a list of one width per layer (Gemma 3n's intermediate_size, which its config class makes
a list) must give every layer the same width (refused in one line otherwise); the grown config writes the list grown.
``ffn_whole_copies``: the config key of a per-layer list (Gemma 3n's activation_sparsity_pattern) where a set entry
makes that layer's MLP cut its gate at the mean plus a multiple of the biased standard deviation over all its neurons
(a gaussian top-k): only the same number of copies of every neuron keeps both, so where any entry is set an MLP width
that is not a whole multiple of the source's is refused in one line.
``identity_kind``: a layer kind (of layer_kinds) that every identity block copies: the nearest source layer of that kind
at or before the one it follows, the first one where none precedes it (Zamba2's mamba layers: a copied hybrid layer
would add a use of a shared block and its adapter slots, a mamba layer with its out_proj zeroed is the identity);
depth growth of a source without a layer of that kind is refused in one line. ``head_dim_from_hidden``: k where the
config class derives head_dim = k x hidden / heads whatever config.json says (Zamba2's attention reads the 2 x hidden
concatenation of the residual stream and the embeddings: k = 2): a target whose heads x head_dim is not k x hidden
is refused in one line. ``untie_refused``: a reason why a tied source cannot be grown with --tie untie (Zamba2's
tie_word_embeddings also ties the shared blocks of its hybrid layers, which a checkpoint then holds once): refused in
one line. ``hidden_fixed``: a reason why the hidden size cannot grow at all (XGLM adds sinusoidal positions whose
frequencies the config class derives from d_model: a wider model's are other functions of the position, not copies
of the source's): a target with another hidden size is refused in one line with it; the MLP width and the depth grow.
``head_halves``: true where the attention pairs the two halves of its heads (DiffLlama's differential attention: query
head p and head p + heads / 2 give two softmax maps whose outputs are subtracted, weighted by a learned lambda, over
the first half of the KV heads' values beside the second half, and a weightless RMSNorm over each pair's 2 x head_dim
outputs): each half of the query heads and of the KV heads grows on its own by the GQA maps, so every new pair copies
a source pair whole, and the ``attn`` axis (o_proj's input) is one block of 2 x head_dim per pair; head counts that
are not even are refused in one line.
``layer_index_dependent``: how the family's layers compute with their own index, which depth growth must then
keep for every source layer (DiffLlama's lambda_init = 0.8 - 0.6 exp(-0.3 x layer index)): identity blocks may only
follow the last source layer; any other position, and --depth-mode stack, is refused in one line with this reason.
``heads_kept``: why the family's attention heads cannot grow (MiniMax's lightning attention computes each head's
decay rate from its index among the head count): the heads and KV heads keep their counts at any width (head_dim is
kept as the table's rope and head_dim slot say), and a target that asks for others is refused in one line with this
reason; the config's head_dim is written, so a hidden size / heads default cannot change it.
``layer_strings``: config keys holding one character per layer (GLM-5's index_topk_pattern "FSSF..."): depth growth
writes the grown layers' characters, as it does for per-layer lists. ``schedule_keys``: config keys from which the
config class derives a per-layer list by a period and an offset (GLM-5's index_topk_freq, index_skip_topk_offset):
depth growth writes them null where the source states them (the grown per-layer list, written in full, is what
transformers reads; a period would describe other layers).
``layer_index_lists``: per-layer config lists whose entries are layer indices (Mistral Large 4's kv_source_layers: the
layer whose latent keys and values each layer attends to, its own index where it computes them): depth growth writes
each grown layer the grown index of the layer its source layer names (an identity block copying a layer that computes
its own names itself; one copying a KV-shared layer reads the nearest earlier grown copy of that layer's source,
as the copied layer does, and is refused in one line where that copy comes after it).
``identity_copies``: {"list": per-layer config key, "entry": value}: under depth growth every identity block after
the first layer copies the nearest source layer at or before the one it follows whose entry in that list is the value
(the first such layer where none precedes it; its weights, its entries in every
per-layer list, its tensors), where the source has one (GLM-5's indexer_types "shared": such a layer reuses the top-k
keys of the last "full" layer before it and has no indexer, so an identity block copying a full layer would choose new
keys for the shared layers after it; an identity block before the first layer keeps copying the first layer).
Role ``layer_scalar``: a stored factor multiplying a block's whole output, residual
included (Gemma 4's [1] buffer), or a per-channel gain [hidden] on the residual stream (Doge's input_residual and
post_attention_residual): gathered as a norm weight is (never scaled by the hidden map's square-root scales, which
the residual stream already carries: scaled, Doge grown 48 -> 72 gave 0.31 relative logit error), 1 in an identity
block.
``scaled_config``: {config key: {"slot": "hidden" | "layers" | "heads" | "kv_heads", "power": p}}: a config value
the model divides by that
slot's size ** p (MiniCPM3's dim_model_base: logits are divided by hidden_size / dim_model_base, p = 1; its
scale_depth: each residual branch is multiplied by scale_depth / sqrt(num_hidden_layers), p = 0.5); the grown config
multiplies it by (new / old) ** p, so the model's factor is the source's (an integer value must stay whole); p = 0
states a value the config class derives from a growing one when config.json leaves it null (MiniCPM3's v_head_dim,
hidden_size // num_attention_heads by default). Slots heads and kv_heads restate a head count under
another key the model class does not read (MiMo-V2-Flash's swa_num_attention_heads, swa_num_key_value_heads = 2 x
the KV heads, which its remote code and other engines read for the sliding layers).
``kept_lists``: config keys whose list values are not one entry per layer (Falcon-H1's mlp_multipliers, whose two
entries would otherwise pass for the layer list of a 2-layer model): depth growth and out-of-core verify leave them.
``embedding_scale_when``: {config key: value, ...}: the embedding multiplier applies only where the config has those
values (AFMoE multiplies its embeddings by sqrt(hidden_size) only with mup_enabled); Family.for_config drops it
elsewhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from hyperclone.common.errors import HyperCloneError
from hyperclone.grow.config_lookup import config_value  # re-exported: the tables' callers read it here
from hyperclone.grow.layer_kinds import LayerKinds, parse_layer_kinds

AXIS_KINDS = ("hidden", "q", "k", "v", "attn", "qkv_interleaved", "qkv_grouped", "qkv_sharded", "ffn", "ffn_pairs",
              "dense_ffn", "shared_ffn",
              "experts", "embed", "vocab", "positions", "head_dim", "heads", "kv_heads", "one",
              "q_lora", "kv_lora", "qk_rope", "mla_q", "mla_kv", "mla_kv_nope", "mla_attn", "index_q", "index_k",
              "index_heads", "ssm_inner", "ssm_heads", "ssm_groups", "conv_kernel", "moe_latent", "conv_inner",
              "q_gate", "lin_qk", "lin_v", "lin_v_heads", "lin_v_dim", "lin_qkvz", "lin_ba", "vocab_rows",
              "ssm_channels", "ssm_state", "dt_rank", "experts_ffn", "expert_ffn", "ffn_double",
              "global_q", "global_k", "global_v", "global_attn", "global_head_dim",
              "per_layer_input", "per_layer_packed", "per_layer_vocab", "output_vocab", "zero_experts",
              "altup_inputs", "altup_coefs", "laurel_rank", "adapter_rank", "decay_block",
              "hc_streams", "hc_pairs", "hc_hidden", "o_latent", "o_group_in", "csa_window", "hca_window",
              "hash_top_k", "lru", "lru_blocks", "lru_block")
EMBEDDING_SCALES = ("none", "sqrt_hidden", "sqrt_hidden_bf16")
ROLES = ("weight", "embedding", "lm_head", "norm", "final_norm", "router", "shared_gate", "layer_scalar")
NORM_KINDS = ("rmsnorm", "layernorm")
CONFIG_SLOTS = ("hidden", "ffn", "heads", "kv_heads", "head_dim", "layers", "vocab", "positions", "embed",
                "experts", "dense_ffn", "shared_ffn", "q_lora", "kv_lora", "qk_rope", "v_head_dim", "top_k",
                "ssm_heads", "ssm_head_dim", "ssm_groups", "ssm_state", "conv_kernel", "ssm_inner", "ssm_expand",
                "moe_latent", "lin_k_heads", "lin_v_heads", "lin_k_dim", "lin_v_dim", "dt_rank", "expert_ffn",
                "index_heads", "index_head_dim", "per_layer_input", "per_layer_vocab", "output_vocab",
                "zero_experts", "altup_inputs", "laurel_rank", "adapter_rank", "decay_block",
                "hc_streams", "o_groups", "o_lora", "csa_window", "hca_window", "hash_top_k", "lru")
# latent widths, the sparse-attention indexer's heads and head width, per-layer embeddings' width and vocabulary,
# zero-computation experts (LongCat-Flash), AltUp's streams and LAuReL's rank (Gemma 3n),
# LoRA adapters' rank (Zamba2), lightning attention's block of tokens (MiniMax), hyper-connection streams, the grouped
# output projection's latent width, the KV compressors' windows and the hash-routing table's experts (DeepSeek-V4):
# kept
LATENT_SLOTS = ("q_lora", "kv_lora", "qk_rope", "v_head_dim", "moe_latent", "index_heads", "index_head_dim",
                "per_layer_input", "per_layer_vocab", "output_vocab", "zero_experts", "altup_inputs",
                "laurel_rank", "adapter_rank", "decay_block", "hc_streams", "o_lora", "csa_window", "hca_window",
                "hash_top_k")
SSM_SLOTS = ("ssm_heads", "ssm_head_dim", "ssm_groups", "ssm_state", "conv_kernel")  # Mamba2: all or none
MAMBA1_SLOTS = ("dt_rank", "ssm_state", "conv_kernel", "ssm_expand")  # Mamba (Mamba1): all, without ssm_heads
LINEAR_SLOTS = ("lin_k_heads", "lin_v_heads", "lin_k_dim", "lin_v_dim")  # gated DeltaNet: all or none
FFN_SLOTS = ("dense_ffn", "shared_ffn", "expert_ffn")  # MLP widths besides ffn; each grows by ffn's factor
REQUIRED_CONFIG_SLOTS = ("hidden", "layers", "vocab")
# axis kinds only a model with attention has (its table needs the heads slot), and only one with an MLP (ffn)
ATTENTION_KINDS = ("q", "k", "v", "attn", "qkv_interleaved", "qkv_grouped", "qkv_sharded", "heads", "kv_heads",
                   "head_dim", "q_gate", "mla_q", "mla_kv", "mla_kv_nope", "mla_attn", "index_q", "index_k",
                   "index_heads", "global_q", "global_k", "global_v", "global_attn", "global_head_dim", "o_latent",
                   "o_group_in")
LRU_KINDS = ("lru", "lru_blocks", "lru_block")  # RecurrentGemma's RG-LRU (its table needs the lru slot)
FFN_KINDS = ("ffn", "ffn_pairs", "dense_ffn", "shared_ffn", "experts_ffn", "expert_ffn", "ffn_double")
TENSOR_KEYS = {"name", "axes", "contract", "role", "optional", "in_memory", "layers", "norm_offset",
               "may_be_transposed", "when", "hidden_power", "kv_shared", "layernorm"}
FAMILY_KEYS = {"model_type", "config", "embedding_scale", "norm_offset", "tied_default", "ignore",
               "final_norm_parametric", "tensors", "ffn_default_multiple", "position_offset", "norm",
               "norm_eps_key", "rope", "refuse", "layer_kinds", "kept_lists", "ffn_auto_adjust", "multi_query",
               "config_aliases", "multi_token_prediction", "vocab_offset", "unscaled_attention", "layer_runs",
               "rmsnorm_key", "per_layer_attention", "slot_defaults", "last_layer_kind", "kv_shared_layers",
               "scaled_config", "embedding_scale_when", "identity_copies", "layer_strings", "schedule_keys",
               "ffn_whole_copies", "identity_kind", "head_dim_from_hidden", "untie_refused", "hidden_fixed",
               "head_halves", "layer_index_dependent", "heads_kept", "ffn_config_factor", "layer_index_lists"}
# family keys whose value is a reason (text) a growth is refused with, see the module doc
REASON_KEYS = ("untie_refused", "hidden_fixed", "layer_index_dependent", "heads_kept")
REFUSE_CONDITIONS = ({"key", "equals"}, {"key", "unless"}, {"tensor"}, {"key", "equals", "when"},
                     {"key", "unless", "when"}, {"key", "contains"})


@dataclass(frozen=True)
class TensorRule:
    name: str  # template, may contain {layer}
    axes: tuple[tuple[str, ...], ...]  # per axis, its sections' kinds
    contract: int | None = None
    role: str = "weight"
    optional: bool = False
    in_memory: tuple[str, int, int] | None = None  # (name in memory, section, sections): see the module doc
    layers: tuple[str, ...] | None = None  # the layer kinds that hold this tensor (None: every layer)
    # a norm's own offset where it is not the family's: Qwen3.5's gated RMSNorm of the linear-attention output
    # multiplies by its stored weight in a family whose other norms apply (1 + weight)
    norm_offset: float | None = None
    may_be_transposed: bool = False  # a stack of expert matrices also stored with its last two axes swapped
    transposed: bool = False  # this rule is the swapped layout of a may_be_transposed rule (see swapped())
    when: tuple[tuple[str, Any], ...] = ()  # config values under which the model has this tensor (Family.for_config)
    hidden_power: float | None = None  # the model multiplies this tensor's effect by hidden_size ** p (see doc)
    kv_shared: bool | None = None  # only in layers that reuse (True) / do not reuse (False) earlier layers' keys
    layernorm: bool = False  # a LayerNorm over the residual stream in an RMSNorm family: whole copies only

    def swapped(self) -> TensorRule:
        """The rule of the same stack stored with its last two axes swapped ([experts, in, out] for
        [experts, out, in]): the same weights, so the contracted axis moves with them."""
        axes = (self.axes[0], self.axes[2], self.axes[1])
        return replace(self, axes=axes, contract=3 - self.contract, may_be_transposed=False, transposed=True)

    def offset(self, family_offset: float) -> float:
        """The offset this norm applies to its stored weight."""
        return family_offset if self.norm_offset is None else self.norm_offset

    @property
    def per_layer(self) -> bool:
        return "{layer}" in self.name

    @property
    def per_expert(self) -> bool:
        return "{expert}" in self.name

    @property
    def emitted(self) -> int | None:
        """The axis a linear layer emits (None: not a linear layer)."""
        return None if self.contract is None else emitted_axis(len(self.axes), self.contract)


def emitted_axis(ndim: int, contract: int) -> int:
    """The output axis of a linear layer's weight: the other axis of a matrix, of [experts, out, in] (contract 2)
    or of [experts, in, out] (contract 1)."""
    return 3 - contract if ndim == 3 else 1 - contract


@dataclass(frozen=True)
class Refusal:
    """A configuration (config key equal to, or outside of, values) or a tensor layout the table refuses."""

    reason: str
    key: str | None = None
    equals: Any = None
    unless: tuple[Any, ...] | None = None
    tensor: str | None = None  # a regex over tensor names
    when: tuple[tuple[str, Any], ...] = ()  # other config keys that must have these values too
    contains: tuple[Any] | None = None  # (value,): a config list holding the value is refused
    depth: bool = False  # refused only where the number of layers grows

    def applies_to_config(self, config: Any) -> bool:
        """Whether a transformers config object is refused (False for a tensor refusal)."""
        if self.key is None:
            return False
        if self.unless is not None:
            matches = config_value(config, self.key) not in self.unless
        elif self.contains is not None:
            matches = self.contains[0] in (config_value(config, self.key) or ())
        else:
            matches = config_has(config, ((self.key, self.equals),))
        return matches and config_has(config, self.when)


def config_has(config: Any, values: tuple[tuple[str, Any], ...]) -> bool:
    """Whether every (key, value) pair holds in a transformers config object; a boolean value is compared by
    truthiness, as the model code reads the flag (a null new_decoder_architecture is the old architecture)."""
    return all(bool(config_value(config, key)) is value if isinstance(value, bool) else
               config_value(config, key) == value for key, value in values)


def has_config_key(raw: dict[str, Any], key: str) -> bool:
    """Whether a config.json dict states a key (dots: a nested one)."""
    *outer, last = key.split(".")
    for part in outer:
        raw = raw.get(part)
        if not isinstance(raw, dict):
            return False
    return last in raw


def set_config_value(raw: dict[str, Any], key: str, value: Any) -> None:
    """Write a value into a config.json dict (dots: into a nested config object, copied first so that a dict shared
    with the source's config is left as it was)."""
    *outer, last = key.split(".")
    for part in outer:
        inner = raw.get(part)
        raw[part] = dict(inner) if isinstance(inner, dict) else {}
        raw = raw[part]
    raw[last] = value


@dataclass(frozen=True)
class PerLayerAttention:
    """Layers of some kinds with their own head_dim and KV heads (Gemma 4's full-attention layers; see the module
    doc): their kinds, and the config keys a config.json may state them under."""

    kinds: tuple[str, ...]
    head_dim: str  # e.g. global_head_dim
    kv_heads: str  # e.g. num_global_key_value_heads
    overrides: tuple[str, str] = ("head_dim", "num_key_value_heads")  # their names in per_layer_config
    kv_factor: int = 0  # > 0: the layers have the global head_dim and this many times the global KV heads (MiMo)

    def layer_values(self, config: Any, index: int) -> tuple[Any, Any]:
        """(head_dim, KV heads) of layer `index`: transformers 5's per_layer_config overrides (a dict in config.json,
        a per-layer view in a config object), else the config's global values."""
        per_layer = config_value(config, "per_layer_config")
        if isinstance(per_layer, dict):
            entry = {int(k): v for k, v in per_layer.items()}.get(index, {})
            return tuple(entry.get(key, config_value(config, key)) for key in self.overrides)
        if per_layer is None:
            return tuple(config_value(config, key) for key in self.overrides)
        return tuple(getattr(per_layer[index], key, None) for key in self.overrides)


def _parse_per_layer_attention(family: str, raw: Any) -> PerLayerAttention | None:
    if raw is None:
        return None
    factor = raw.get("kv_heads_factor") if isinstance(raw, dict) else None
    if isinstance(factor, int) and not isinstance(factor, bool) and factor > 0 and set(raw) == {"layers",
                                                                                                 "kv_heads_factor"}:
        raw = {"layers": raw["layers"], "head_dim": "", "kv_heads": ""}
    if not (isinstance(raw, dict) and set(raw) == {"layers", "head_dim", "kv_heads"} and isinstance(raw["layers"], list)
            and raw["layers"] and all(isinstance(v, str) for v in [*raw["layers"], raw["head_dim"], raw["kv_heads"]])):
        raise ValueError(f"family {family}: per_layer_attention must be {{layers: [kinds], head_dim, kv_heads}} or "
                         "{layers: [kinds], kv_heads_factor: a positive integer}")
    return PerLayerAttention(tuple(raw["layers"]), raw["head_dim"], raw["kv_heads"], kv_factor=factor or 0)


@dataclass(frozen=True)
class Family:
    model_type: str
    config_keys: dict[str, str]  # slot -> key in config.json
    tensors: tuple[TensorRule, ...]
    norm: str  # "rmsnorm" or "layernorm"
    norm_eps_key: str | None  # config key of the norms' eps; None when hard-coded
    rope: bool
    ignore: tuple[str, ...] = ()
    embedding_scale: str = "none"  # "none", "sqrt_hidden" (Gemma: x sqrt(hidden_size)) or "sqrt_hidden_bf16"
    embedding_scale_when: tuple[tuple[str, Any], ...] = ()  # config values under which embedding_scale applies
    norm_offset: float = 0.0  # Gemma's RMSNorm applies (offset + weight)
    tied_default: bool = False  # transformers' default of tie_word_embeddings for this family
    final_norm_parametric: bool = True  # False when the final norm has no weight (OLMo v1)
    ffn_default_multiple: int | None = None  # GPT-2: n_inner None means 4 x hidden
    position_offset: int = 0  # OPT's learned positions have 2 extra rows
    vocab_offset: int = 0  # rows a vocab_rows axis holds beyond the vocabulary (Mllama's embedding: 8)
    refuse: tuple[Refusal, ...] = ()  # configurations and tensor layouts refused
    layer_kinds: LayerKinds | None = None  # blocks of more than one kind (hyperclone.grow.layer_kinds)
    kept_lists: tuple[str, ...] = ()  # config lists that are not per layer (see the module doc)
    ffn_auto_adjust: dict[str, str] | None = None  # LFM2's derived MLP width (see the module doc)
    ffn_config_factor: int = 1  # ffn's config value is this many times the MLP's width (RecurrentGemma: 2)
    multi_query: str | None = None  # the config key of a multi-query flag (GPT-BigCode): one KV head, kept at one
    multi_query_when: tuple[tuple[str, Any], ...] = ()  # ... counted only where these config values hold (Falcon)
    multi_query_always: bool = False  # one KV head whatever the config says (DeepSeek-V4), kept at one
    config_aliases: tuple[tuple[str, str], ...] = ()  # (alias, key): the class reads the alias in the key's place
    mtp_tensor: str | None = None  # multi-token prediction weights by name (left out of the grown checkpoint)
    mtp_layers_beyond: bool = False  # ... or as decoder layers past num_hidden_layers
    unscaled_attention: bool = False  # scores q.k without 1/sqrt(head_dim) (GPT-Neo): head_dim may not grow
    last_layer_kind: str | None = None  # the kind the config class forces on the last layer (Gemma 4: full)
    slot_defaults: tuple[tuple[str, str], ...] = ()  # (slot, slot): a null config value takes the other's, as the
    # model class does (Cohere2-MoE's dense MLP is intermediate_size wide without prefix_dense_intermediate_size)
    layer_runs: str | None = None  # a per-layer pattern stated as [[pattern, repeats], ...] (GPT-Neo attention_types)
    rmsnorm_key: str | None = None  # set in the config: the norms are RMSNorms with that epsilon (Cohere2-MoE)
    per_layer_attention: PerLayerAttention | None = None  # layers with their own head_dim and KV heads (Gemma 4)
    scaled_config: tuple[tuple[str, str, float], ...] = ()  # (key, slot, p): see the module doc (MiniCPM3)
    kv_shared_layers: str | None = None  # config key: how many last layers reuse earlier layers' keys (Gemma 4)
    identity_copies: tuple[str, Any] | None = None  # (per-layer list key, entry): the layer identity blocks copy
    layer_strings: tuple[str, ...] = ()  # config strings of one character per layer, rewritten under depth growth
    layer_index_lists: tuple[str, ...] = ()  # per-layer config lists of layer indices, renumbered under depth growth
    schedule_keys: tuple[str, ...] = ()  # config keys deriving a per-layer list by period: null under depth growth
    ffn_whole_copies: str | None = None  # per-layer config list: where an entry is set, the MLP grows by whole copies
    identity_kind: str | None = None  # the layer kind every identity block copies (Zamba2: mamba), see the doc
    head_dim_from_hidden: int | None = None  # k: the config class derives head_dim = k x hidden / heads (Zamba2: 2)
    untie_refused: str | None = None  # why a tied source cannot be untied exactly (Zamba2), see the module doc
    hidden_fixed: str | None = None  # why the hidden size cannot grow at all (XGLM's sinusoids), see the module doc
    head_halves: bool = False  # differential attention: heads p and p + heads / 2 form a pair (DiffLlama), see doc
    layer_index_dependent: str | None = None  # how a layer computes with its own index: no source layer may move
    heads_kept: str | None = None  # why the heads and KV heads cannot grow (MiniMax's decay rates): kept at any width

    def for_config(self, config: Any) -> Family:
        """The family as a config's model computes it: RMSNorms where the table's rmsnorm_key is set, only the
        tensors whose ``when`` holds in the config, and no embedding multiplier where embedding_scale_when fails."""
        family = self
        if self.embedding_scale_when and not config_has(config, self.embedding_scale_when):
            family = replace(family, embedding_scale="none")
        if any(rule.when for rule in self.tensors):
            family = replace(family, tensors=tuple(rule for rule in self.tensors if config_has(config, rule.when)))
        if self.rmsnorm_key is None or config_value(config, self.rmsnorm_key) is None:
            return family
        return replace(family, norm="rmsnorm", norm_eps_key=self.rmsnorm_key)

    def is_multi_token_prediction(self, tensor_name: str, layers: int) -> bool:
        """Whether a stored tensor is a multi-token prediction weight, which transformers does not load."""
        if self.mtp_tensor is not None and re.search(self.mtp_tensor, tensor_name):
            return True
        index = re.match(r"model\.layers\.(\d+)\.", tensor_name) if self.mtp_layers_beyond else None
        return index is not None and int(index.group(1)) >= layers

    def is_multi_query(self, config: Any) -> bool:
        """Whether a transformers config object describes multi-query attention (one KV head, kept at one)."""
        if self.multi_query_always:
            return True
        return (self.multi_query is not None and bool(getattr(config, self.multi_query, False))
                and config_has(config, self.multi_query_when))

    def is_ignored(self, tensor_name: str) -> bool:
        return any(re.search(pattern, tensor_name) for pattern in self.ignore)


def _parse_rule(family: str, raw: dict) -> TensorRule:
    unknown = set(raw) - TENSOR_KEYS
    if unknown:
        raise ValueError(f"family {family}: tensor {raw.get('name')!r} has unknown keys {sorted(unknown)}")
    axes = tuple(tuple(axis.split("+")) for axis in raw["axes"])
    for axis in axes:
        for kind in axis:
            if kind not in AXIS_KINDS:
                raise ValueError(f"family {family}: tensor {raw['name']!r} has unknown axis kind {kind!r}")
    role = raw.get("role", "weight")
    if role not in ROLES:
        raise ValueError(f"family {family}: tensor {raw['name']!r} has unknown role {role!r}")
    contract = raw.get("contract")
    # a stack of expert matrices: [experts, out, in] (contract 2) or [experts, in, out] (contract 1)
    stacked = len(axes) == 3 and contract in (1, 2) and axes[0] == ("experts",)
    # a matrix may read a fused axis (Zamba2's shared attention reads the residual stream and the embeddings side by
    # side, "hidden+hidden"): its columns are read through the sections' maps concatenated, as rows are emitted
    if contract is not None and not stacked and (len(axes) != 2 or contract not in (0, 1)):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: contract must name an unfused axis of a stack of "
                         "expert matrices (1 or 2: [experts, in, out] or [experts, out, in]) or an axis of a matrix")
    if stacked and len(axes[contract]) != 1:
        raise ValueError(f"family {family}: tensor {raw['name']!r}: contract must name an unfused axis")
    in_memory = raw.get("in_memory")
    if in_memory is not None and not (isinstance(in_memory, list) and len(in_memory) == 3
                                      and isinstance(in_memory[0], str) and isinstance(in_memory[2], int)
                                      and isinstance(in_memory[1], int) and 0 <= in_memory[1] < in_memory[2]):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: in_memory must be [name, section, sections]")
    layers = raw.get("layers")
    if layers is not None and not (isinstance(layers, list) and layers and all(isinstance(k, str) for k in layers)):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: layers must be a list of layer kinds")
    if layers is not None and "{layer}" not in raw["name"]:
        raise ValueError(f"family {family}: tensor {raw['name']!r}: layers only applies to per-layer tensors")
    norm_offset = raw.get("norm_offset")
    if norm_offset is not None and (role != "norm" or not isinstance(norm_offset, (int, float))):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: norm_offset is a number, on a norm only")
    may_be_transposed = raw.get("may_be_transposed", False)
    if may_be_transposed not in (True, False) or (may_be_transposed and not stacked):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: may_be_transposed is true or false, on a stack "
                         "of expert matrices only")
    when = raw.get("when", {})
    if not isinstance(when, dict) or not all(isinstance(key, str) for key in when):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: when must map config keys to values")
    hidden_power = raw.get("hidden_power")
    if hidden_power is not None and (isinstance(hidden_power, bool) or not isinstance(hidden_power, (int, float))
                                     or role not in ("norm", "weight") or len(axes) > 2):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: hidden_power is a number, on a norm or a weight "
                         "of at most two axes (growth does not scale stacked expert tensors)")
    kv_shared = raw.get("kv_shared")
    if kv_shared not in (None, True, False) or (kv_shared is not None and "{layer}" not in raw["name"]):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: kv_shared is true or false, on per-layer tensors")
    layernorm = raw.get("layernorm", False)
    if layernorm not in (True, False) or (layernorm and (role != "norm" or axes != (("hidden",),))):
        raise ValueError(f"family {family}: tensor {raw['name']!r}: layernorm is true or false, on a norm over the "
                         "hidden axis")
    return TensorRule(raw["name"], axes, contract, role, bool(raw.get("optional", False)),
                      tuple(in_memory) if in_memory else None, tuple(layers) if layers else None,
                      None if norm_offset is None else float(norm_offset), may_be_transposed,
                      when=tuple(when.items()), hidden_power=None if hidden_power is None else float(hidden_power),
                      kv_shared=kv_shared, layernorm=layernorm)


def _parse_family(raw: dict) -> Family:
    """A family table checked and read: long, one line per table key (each parsed by its own helper)."""
    name = raw.get("model_type", "?")
    unknown = set(raw) - FAMILY_KEYS
    if unknown:
        raise ValueError(f"family {name}: unknown keys {sorted(unknown)}")
    config_keys = dict(raw["config"])
    bad_slots = set(config_keys) - set(CONFIG_SLOTS)
    missing = [slot for slot in REQUIRED_CONFIG_SLOTS if slot not in config_keys]
    if bad_slots or missing:
        raise ValueError(f"family {name}: config slots unknown {sorted(bad_slots)} / missing {missing}")
    if raw.get("norm") not in NORM_KINDS or not isinstance(raw.get("rope"), bool) or "norm_eps_key" not in raw:
        raise ValueError(f"family {name}: needs norm ({' | '.join(NORM_KINDS)}), norm_eps_key and rope")
    if raw.get("embedding_scale", "none") not in EMBEDDING_SCALES:
        raise ValueError(f"family {name}: embedding_scale must be one of {', '.join(EMBEDDING_SCALES)}")
    if not _valid_when(raw.get("embedding_scale_when", {"-": 0})):
        raise ValueError(f"family {name}: embedding_scale_when must map config keys to values")
    tensors = tuple(_parse_rule(name, t) for t in raw["tensors"])
    if any(t.per_expert for t in tensors) and "experts" not in config_keys:
        raise ValueError(f"family {name}: {{expert}} tensor names need the experts config slot")
    _check_optional_parts(name, config_keys, tensors)
    ssm = [slot for slot in SSM_SLOTS if slot in config_keys]
    if "dt_rank" in config_keys:  # Mamba1
        if "ssm_heads" in config_keys or not all(slot in config_keys for slot in MAMBA1_SLOTS):
            raise ValueError(f"family {name}: Mamba needs the config slots {', '.join(MAMBA1_SLOTS)} and no Mamba2 "
                             "heads")
    elif set(ssm) - {"conv_kernel"} and len(ssm) != len(SSM_SLOTS):  # a short convolution alone (LFM2) needs no SSM
        raise ValueError(f"family {name}: Mamba2 needs all of the config slots {', '.join(SSM_SLOTS)}")
    linear = [slot for slot in LINEAR_SLOTS if slot in config_keys]
    if linear and (len(linear) != len(LINEAR_SLOTS) or "conv_kernel" not in config_keys):
        raise ValueError(f"family {name}: a gated DeltaNet needs all of the config slots {', '.join(LINEAR_SLOTS)} "
                         "and conv_kernel")
    layer_kinds = parse_layer_kinds(name, raw["layer_kinds"]) if "layer_kinds" in raw else None
    named = {kind for t in tensors for kind in t.layers or ()}
    if named and layer_kinds is None:
        raise ValueError(f"family {name}: tensors name layer kinds but the table has no layer_kinds")
    known = layer_kinds.kinds if layer_kinds is not None else None
    if known is not None and named - set(known):
        raise ValueError(f"family {name}: layer kinds {sorted(named - set(known))} are not in layer_kinds")
    return Family(
        model_type=raw["model_type"],
        config_keys=config_keys,
        tensors=tensors,
        norm=raw["norm"],
        norm_eps_key=raw["norm_eps_key"],
        rope=raw["rope"],
        ignore=tuple(raw.get("ignore", ())),
        embedding_scale=raw.get("embedding_scale", "none"),
        embedding_scale_when=tuple(raw.get("embedding_scale_when", {}).items()),
        norm_offset=float(raw.get("norm_offset", 0.0)),
        tied_default=bool(raw.get("tied_default", False)),
        final_norm_parametric=bool(raw.get("final_norm_parametric", True)),
        ffn_default_multiple=raw.get("ffn_default_multiple"),
        position_offset=int(raw.get("position_offset", 0)),
        vocab_offset=int(raw.get("vocab_offset", 0)),
        refuse=tuple(_parse_refusal(name, r) for r in raw.get("refuse", [])),
        layer_kinds=layer_kinds,
        kept_lists=tuple(raw.get("kept_lists", ())),
        ffn_auto_adjust=_parse_ffn_auto_adjust(name, raw.get("ffn_auto_adjust")),
        ffn_config_factor=_parse_ffn_config_factor(name, raw.get("ffn_config_factor", 1), "ffn_auto_adjust" in raw),
        **_parse_multi_query(name, raw.get("multi_query")),
        config_aliases=_parse_config_aliases(name, raw.get("config_aliases", {})),
        **_parse_multi_token_prediction(name, raw.get("multi_token_prediction")),
        **_parse_attention_and_norm_keys(name, raw),
        per_layer_attention=_parse_per_layer_attention(name, raw.get("per_layer_attention")),
        **_parse_config_forced(name, raw, config_keys),
        scaled_config=_parse_scaled_config(name, raw.get("scaled_config", {})),
        identity_copies=_parse_identity_copies(name, raw.get("identity_copies")),
        layer_strings=_parse_keys(name, "layer_strings", raw.get("layer_strings", [])),
        layer_index_lists=_parse_keys(name, "layer_index_lists", raw.get("layer_index_lists", [])),
        schedule_keys=_parse_keys(name, "schedule_keys", raw.get("schedule_keys", [])),
        ffn_whole_copies=_parse_keys(name, "ffn_whole_copies", [raw.get("ffn_whole_copies", "")])[0] or None,
        **_parse_derived_layout(name, raw),
    )


def _parse_keys(name: str, field: str, raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(key, str) for key in raw):
        raise ValueError(f"family {name}: {field} is a list of config keys")
    return tuple(raw)


def _parse_derived_layout(name: str, raw: dict) -> dict[str, Any]:
    """identity_kind (one of the table's layer kinds), head_dim_from_hidden (a positive integer), head_halves (true or
    false) and the reasons untie_refused, hidden_fixed, layer_index_dependent and heads_kept, see the module doc."""
    kind, factor, halves = raw.get("identity_kind"), raw.get("head_dim_from_hidden"), raw.get("head_halves", False)
    reasons = {key: raw.get(key) for key in REASON_KEYS}
    for key, reason in reasons.items():
        if reason is not None and not (isinstance(reason, str) and reason):
            raise ValueError(f"family {name}: {key} is a reason (text)")
    kinds = raw.get("layer_kinds", {}).get("values", {}).values()
    if kind is not None and kind not in kinds:
        raise ValueError(f"family {name}: identity_kind must be one of the kinds its layer_kinds values name")
    if factor is not None and (isinstance(factor, bool) or not isinstance(factor, int) or factor < 1):
        raise ValueError(f"family {name}: head_dim_from_hidden is a positive integer")
    if not isinstance(halves, bool) or (halves and "heads" not in raw.get("config", {})):
        raise ValueError(f"family {name}: head_halves is true or false, true only in a table with attention")
    return {"identity_kind": kind, "head_dim_from_hidden": factor, "head_halves": halves, **reasons}


def _parse_identity_copies(name: str, raw: Any) -> tuple[str, Any] | None:
    """identity_copies: {"list": per-layer config key, "entry": value} (see the module doc)."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"list", "entry"} or not isinstance(raw["list"], str):
        raise ValueError(f"family {name}: identity_copies is {{list: a per-layer config key, entry: its value}}")
    return raw["list"], raw["entry"]


def _parse_scaled_config(name: str, raw: Any) -> tuple[tuple[str, str, float], ...]:
    """scaled_config: {key: {"slot": "hidden" | "layers" | "heads" | "kv_heads", "power": number}} (module doc)."""
    if not isinstance(raw, dict) or not all(
            isinstance(entry, dict) and set(entry) == {"slot", "power"}
            and entry["slot"] in ("hidden", "layers", "heads", "kv_heads")
            and isinstance(entry["power"], (int, float)) and not isinstance(entry["power"], bool)
            for entry in raw.values()):
        raise ValueError(f"family {name}: scaled_config maps config keys to "
                         "{slot: hidden | layers | heads | kv_heads, power: number}")
    return tuple((key, entry["slot"], float(entry["power"])) for key, entry in raw.items())


def _parse_config_forced(name: str, raw: dict, config_keys: dict[str, str]) -> dict[str, Any]:
    """slot_defaults and last_layer_kind: what the config class settles whatever config.json says."""
    defaults = raw.get("slot_defaults", {})
    if not isinstance(defaults, dict) or not all(slot in FFN_SLOTS and other in config_keys and slot in config_keys
                                                 for slot, other in defaults.items()):
        raise ValueError(f"family {name}: slot_defaults maps an MLP width slot of the table to another of its slots")
    last = raw.get("last_layer_kind")
    if last is not None and (raw.get("layer_kinds") is None or last not in raw["layer_kinds"]["values"].values()):
        raise ValueError(f"family {name}: last_layer_kind must be one of its layer kinds")
    shared = raw.get("kv_shared_layers")
    if shared is not None and not isinstance(shared, str):
        raise ValueError(f"family {name}: kv_shared_layers is a config key")
    return {"slot_defaults": tuple(defaults.items()), "last_layer_kind": last, "kv_shared_layers": shared}


def _parse_attention_and_norm_keys(name: str, raw: dict) -> dict[str, Any]:
    """unscaled_attention, layer_runs and rmsnorm_key (see the module doc)."""
    if not isinstance(raw.get("unscaled_attention", False), bool) or not all(
            isinstance(raw.get(key, ""), str) for key in ("layer_runs", "rmsnorm_key")):
        raise ValueError(f"family {name}: unscaled_attention is true or false, layer_runs and rmsnorm_key config keys")
    return dict(unscaled_attention=raw.get("unscaled_attention", False), layer_runs=raw.get("layer_runs"),
                rmsnorm_key=raw.get("rmsnorm_key"))


def _check_optional_parts(family: str, config_keys: dict[str, str], tensors: tuple[TensorRule, ...]) -> None:
    """A table without the heads slot describes no attention, one without the ffn slot no MLP, one without the lru
    slot no RG-LRU: none may use their slots or axis kinds (the RG-LRU's blocks are counted by the heads slot)."""
    kinds = {kind for t in tensors for axis in t.axes for kind in axis}
    for slot, part, slots, axis_kinds in (("heads", "attention", ("kv_heads", "head_dim", "lru"), ATTENTION_KINDS),
                                          ("ffn", "MLP", ("dense_ffn", "shared_ffn", "experts"), FFN_KINDS),
                                          ("lru", "RG-LRU", (), LRU_KINDS)):
        if slot in config_keys:
            continue
        used = sorted(set(slots) & set(config_keys)) + sorted(kinds & set(axis_kinds))
        if used:
            raise ValueError(f"family {family}: without the {slot} slot the table has no {part}, but it uses "
                             f"{', '.join(used)}")


def _parse_multi_token_prediction(family: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if raw == {"layers_beyond": True}:
        return {"mtp_layers_beyond": True}
    if isinstance(raw, dict) and set(raw) == {"tensor"} and isinstance(raw["tensor"], str):
        re.compile(raw["tensor"])
        return {"mtp_tensor": raw["tensor"]}
    raise ValueError(f"family {family}: multi_token_prediction must be {{tensor: regex}} or {{layers_beyond: true}}")


def _parse_config_aliases(family: str, raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError(f"family {family}: config_aliases must map config keys to config keys")
    return tuple(raw.items())


def _parse_multi_query(family: str, raw: Any) -> dict[str, Any]:
    if raw is True:  # one KV head, which no config key states (DeepSeek-V4)
        return {"multi_query": None, "multi_query_always": True}
    if raw is None or isinstance(raw, str):
        return {"multi_query": raw}
    if not (isinstance(raw, dict) and set(raw) == {"flag", "when"} and isinstance(raw["flag"], str)
            and _valid_when(raw["when"])):
        raise ValueError(f"family {family}: multi_query must be a config key or {{flag, when}}, or true")
    return {"multi_query": raw["flag"], "multi_query_when": tuple(raw["when"].items())}


def _valid_when(raw: Any) -> bool:
    return isinstance(raw, dict) and bool(raw) and all(isinstance(key, str) for key in raw)


def _parse_ffn_config_factor(family: str, factor: Any, auto_adjust: bool) -> int:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"family {family}: ffn_config_factor is a positive integer")
    if factor != 1 and auto_adjust:  # adjusted_ffn would apply one of the two only
        raise ValueError(f"family {family}: ffn_config_factor and ffn_auto_adjust cannot be combined")
    return factor


def _parse_ffn_auto_adjust(family: str, raw: Any) -> dict[str, str] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) != {"flag", "multiplier", "multiple_of"} or not all(
            isinstance(v, str) for v in raw.values()):
        raise ValueError(f"family {family}: ffn_auto_adjust must name the config keys flag, multiplier, multiple_of")
    return dict(raw)


def _valid_refusal(raw: Any) -> bool:
    if not isinstance(raw, dict) or not isinstance(raw.get("reason"), str) or not raw["reason"]:
        return False
    if set(raw) - {"reason", "depth"} not in REFUSE_CONDITIONS or not isinstance(raw.get("unless", []), list):
        return False
    if raw.get("depth", True) is not True or ("depth" in raw and "key" not in raw):
        return False
    if "when" in raw and not _valid_when(raw["when"]):
        return False
    return all(isinstance(raw.get(k, ""), str) for k in ("key", "tensor"))


def _parse_refusal(family: str, raw: Any) -> Refusal:
    if not _valid_refusal(raw):
        raise ValueError(f"family {family}: refuse must be a list of {{key, equals | unless, reason[, when]}} or "
                         "{tensor, reason} objects")
    if "tensor" in raw:
        re.compile(raw["tensor"])  # a bad pattern fails when the tables load, not when a checkpoint is read
    unless = tuple(raw["unless"]) if "unless" in raw else None
    return Refusal(raw["reason"], raw.get("key"), raw.get("equals"), unless, raw.get("tensor"),
                   tuple(raw.get("when", {}).items()), (raw["contains"],) if "contains" in raw else None,
                   bool(raw.get("depth", False)))


def _load_all() -> dict[str, Family]:
    families = {}
    for entry in sorted(resources.files(__name__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".json"):
            family = _parse_family(json.loads(entry.read_text()))
            families[family.model_type] = family
    return families


FAMILIES: dict[str, Family] = _load_all()


def supported_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(model_type: str | None) -> Family:
    if model_type not in FAMILIES:
        raise HyperCloneError(
            f"unsupported model family {model_type!r}; supported: {', '.join(supported_families())}"
        )
    return FAMILIES[model_type]
