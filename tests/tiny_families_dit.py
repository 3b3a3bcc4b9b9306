"""Tiny random-weight checkpoints of the DiT families with LLM text encoders.

Sana, HunyuanDiT, CogView4 and Lumina2, built like diffusers' own tests'
``get_dummy_components`` (tests/pipelines/<family>/test_*.py) and in the style of
``tiny_families``: small configs, seeded random weights, and tokenizers made
locally instead of the hub's ``hf-internal-testing/dummy-gemma``, GLM-4, BERT and
MT5 tokenizers (a byte-fallback Gemma BPE, a byte-level GLM-style BPE, a
character WordPiece BERT, and ``tiny_families.t5_tokenizer``).

The VAEs downsample by 8, as the real ones (but Sana's 32x DC-AE) do; HunyuanDiT
and Lumina2 need that: HunyuanDiT sizes its rotary grid as ``height // 8`` and
Lumina2 hard-codes ``vae_scale_factor = 8``. Each transformer's ``sample_size``
is chosen so that the default size (``sample_size * vae_scale_factor``) is 32 px
where the pipeline derives it; Sana's default is the literal 1024.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from diffusers import (
    AutoencoderDC,
    AutoencoderKL,
    CogView4Pipeline,
    CogView4Transformer2DModel,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    HunyuanDiT2DModel,
    HunyuanDiTPipeline,
    Lumina2Pipeline,
    Lumina2Transformer2DModel,
    SanaPipeline,
    SanaTransformer2DModel,
)
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    Gemma2Config,
    Gemma2Model,
    GemmaTokenizer,
    GlmConfig,
    GlmModel,
    PreTrainedTokenizerFast,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tests.tiny_families import HIDDEN, t5_text_encoder, t5_tokenizer

# Printable ASCII without whitespace: the characters given their own tokens.
CHARACTERS = list(string.printable.strip())


def gemma_tokenizer() -> GemmaTokenizer:
    """A Gemma BPE tokenizer: ASCII characters, ``▁`` for a space, byte fallback for the rest."""
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "\u2581", *CHARACTERS]
    pieces += [f"<0x{b:02X}>" for b in range(256)]
    return GemmaTokenizer(
        vocab={p: i for i, p in enumerate(pieces)}, add_bos_token=True, padding_side="right"
    )


def glm_tokenizer() -> PreTrainedTokenizerFast:
    """A GLM-4-style byte-level BPE (no merges): ``[gMASK]<sop>`` prefix, left padding."""
    symbols = list(bytes_to_unicode().values())
    specials = ["<|endoftext|>", "[gMASK]", "<sop>"]
    vocab = {s: i for i, s in enumerate(symbols + specials)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="[gMASK] <sop> $A",
        special_tokens=[("[gMASK]", vocab["[gMASK]"]), ("<sop>", vocab["<sop>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        additional_special_tokens=["[gMASK]", "<sop>"],
        padding_side="left",
    )


def bert_tokenizer() -> BertTokenizer:
    """A lower-case character WordPiece BERT tokenizer (Chinese characters become [UNK])."""
    characters = [c for c in CHARACTERS if not c.isupper()]
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += characters + ["##" + c for c in characters]
    return BertTokenizer(vocab={p: i for i, p in enumerate(pieces)}, model_max_length=77)


def gemma2_encoder(tokenizer: GemmaTokenizer, layers: int = 1) -> Gemma2Model:
    config = Gemma2Config(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attn_implementation="eager",
    )
    return Gemma2Model(config)


def vae8(**extra: Any) -> AutoencoderKL:
    """A four-block VAE: scale factor 8, as the real SDXL/Flux-style VAEs."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=32,
        **extra,
    )


def dc_ae() -> AutoencoderDC:
    """A four-stage deep-compression autoencoder: scale factor 2 ** (4 - 1) = 8."""
    return AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        encoder_qkv_multiscales=((), (), (), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,)),
        encoder_layers_per_block=(1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )


def sana(workdir: Path) -> SanaPipeline:
    tokenizer = gemma_tokenizer()
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=8,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=HIDDEN,
        # 16 is the smallest size resolution binning accepts (it picks ASPECT_RATIO_512_BIN).
        sample_size=16,
    )
    return SanaPipeline(
        tokenizer=tokenizer,
        text_encoder=gemma2_encoder(tokenizer),
        vae=dc_ae(),
        transformer=transformer,
        # The sampler diffusers' convert_sana_to_diffusers.py ships (flow-dpm_solver, 1024 px).
        scheduler=DPMSolverMultistepScheduler(
            flow_shift=3.0, use_flow_sigmas=True, prediction_type="flow_prediction"
        ),
    )


def hunyuan_dit(workdir: Path) -> HunyuanDiTPipeline:
    bert = bert_tokenizer()
    t5 = t5_tokenizer()
    transformer = HunyuanDiT2DModel(
        sample_size=4,
        num_layers=1,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        in_channels=4,
        cross_attention_dim=HIDDEN,
        cross_attention_dim_t5=HIDDEN,
        pooled_projection_dim=16,
        hidden_size=24,
        activation_fn="gelu-approximate",
    )
    text_encoder = BertModel(
        BertConfig(
            vocab_size=len(bert),
            hidden_size=HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=bert.pad_token_id,
        )
    )
    # HunyuanDiT's training schedule (Tencent's hydit scripts): scaled_linear
    # 0.00085-0.03, v-prediction.
    sampler = DDPMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.03,
        clip_sample=False,
        prediction_type="v_prediction",
        steps_offset=1,
        timestep_spacing="leading",
    )
    return HunyuanDiTPipeline(
        vae=vae8(),
        text_encoder=text_encoder,
        tokenizer=bert,
        transformer=transformer,
        scheduler=sampler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        text_encoder_2=t5_text_encoder(t5),
        tokenizer_2=t5,
    )


def cogview4(workdir: Path) -> CogView4Pipeline:
    tokenizer = glm_tokenizer()
    text_encoder = GlmModel(
        GlmConfig(
            vocab_size=len(tokenizer),
            hidden_size=HIDDEN,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    transformer = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=HIDDEN,
        time_embed_dim=8,
        condition_dim=4,
        sample_size=4,
    )
    # As diffusers' convert_cogview4_to_diffusers.py.
    sampler = FlowMatchEulerDiscreteScheduler(
        base_shift=0.25,
        max_shift=0.75,
        base_image_seq_len=256,
        use_dynamic_shifting=True,
        time_shift_type="linear",
    )
    return CogView4Pipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae8(),
        transformer=transformer,
        scheduler=sampler,
    )


def lumina2(workdir: Path) -> Lumina2Pipeline:
    tokenizer = gemma_tokenizer()
    transformer = Lumina2Transformer2DModel(
        sample_size=4,
        patch_size=2,
        in_channels=4,
        hidden_size=HIDDEN,
        num_layers=1,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        norm_eps=1e-5,
        axes_dim_rope=(8, 4, 4),
        cap_feat_dim=HIDDEN,
    )
    return Lumina2Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae8(shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False),
        # Lumina2 reads hidden_states[-2]: two layers, so a layer shapes the embedding.
        text_encoder=gemma2_encoder(tokenizer, layers=2),
        tokenizer=tokenizer,
    )


FAMILIES: dict[str, Callable[[Path], Any]] = {
    "sana": sana,
    "hunyuan-dit": hunyuan_dit,
    "cogview4": cogview4,
    "lumina2": lumina2,
}
