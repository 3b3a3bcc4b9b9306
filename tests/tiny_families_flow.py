"""Tiny random-weight checkpoints of the newer flow-matching pipeline families.

Companion of ``tests/tiny_families.py`` (same style, same helpers): built like
diffusers' own tests' ``get_dummy_components`` for Qwen-Image, Flux.2 (dev and
klein), Z-Image, Chroma and AuraFlow (SD3.5 is in tiny_families.py), with small
configs and seeded random weights. Where diffusers' tests download a tokenizer from the hub, the
tokenizer is made here: a byte-level unigram tokenizer whose vocabulary is the
256 byte symbols plus the words of the pipeline's fixed prompt template (so the
Qwen-Image template prefix is exactly the 34 tokens the pipeline drops), with
the special tokens and chat template the pipeline uses. Build one with
``tiny_families.build``-style code: ``torch.manual_seed(seed)``, then the
builder from ``FAMILIES``, then ``save_pretrained``.

Default sizes (no height/width given): qwen-image, flux2, flux2-klein and
chroma make 128x128 (``default_sample_size`` is a literal 128 times the VAE
scale factor, which is 1 here); z-image and auraflow make 1024x1024 (a literal
default, the VAE scale factor is 8 here to keep the transformer at 4096 image
tokens).

There is no guidance-distilled Qwen-Image variant: QwenImageTransformer2DModel
accepts ``guidance_embeds=True`` but has no guidance embedder, and a call then
fails in its timestep embedding (TypeError, diffusers 0.42.1).

Flux.2 text encoders are read at fixed hidden-state layers by default
((10, 20, 30) for dev, (9, 18, 27) for klein), so those encoders have 30 and 27
(tiny) layers; the prompt embedding width is three times their hidden size.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AuraFlowPipeline,
    AuraFlowTransformer2DModel,
    AutoencoderKL,
    AutoencoderKLFlux2,
    AutoencoderKLQwenImage,
    ChromaPipeline,
    ChromaTransformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Pipeline,
    Flux2Transformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    ZImagePipeline,
    ZImageTransformer2DModel,
)
from diffusers.pipelines.flux2.system_messages import SYSTEM_MESSAGE
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Mistral3Config,
    Mistral3ForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3Model,
    UMT5Config,
    UMT5EncoderModel,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from tests.tiny_families import (
    HIDDEN,
    t5_text_encoder,
    t5_tokenizer,
)

# Hidden size of the decoder-only (Qwen, Mistral) text encoders.
LM_HIDDEN = 16
# Their weight init std (transformers' default is 0.02): 0.2 makes the hidden states
# the pipelines read O(1), as in a trained model, so the prompt visibly reaches the pixels.
LM_INIT = 0.2

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
# QwenImagePipeline's template (its first 34 tokens are dropped from the embedding).
QWEN_IMAGE_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, "
    "quantity, text, spatial relationships of the objects and background:<|im_end|>\n"
    "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
# Qwen3's chat template, reduced to what Flux2KleinPipeline and ZImagePipeline use.
QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}"
)
MISTRAL_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "[INST]", "[/INST]"]
MISTRAL_SPECIALS += ["[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[IMG]"]
# Mistral-Small-3.1's chat template, reduced to text parts (Flux2Pipeline sends content lists).
MISTRAL_CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['content'] is string %}{%- set text = message['content'] %}"
    "{%- else %}{%- set text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') %}{%- endif %}"
    "{%- if message['role'] == 'system' %}{{- '[SYSTEM_PROMPT]' + text + '[/SYSTEM_PROMPT]' }}"
    "{%- elif message['role'] == 'user' %}{{- '[INST]' + text + '[/INST]' }}"
    "{%- else %}{{- text + eos_token }}{%- endif %}"
    "{%- endfor %}"
)


def unigram_tokenizer(corpus: str, specials: list[str], **tokens: Any) -> PreTrainedTokenizerFast:
    """A byte-level unigram tokenizer: the 256 byte symbols, plus every word of ``corpus``
    (so the pipeline's fixed template text takes one token a word), plus ``specials``."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for special in specials:
        corpus = corpus.replace(special, " ")
    symbols = list(bytes_to_unicode().values())
    words = sorted({w for w, _ in pre.pre_tokenize_str(corpus)} - set(symbols))
    # Viterbi picks the fewest pieces: a whole word (score -1) beats its bytes (-10 each).
    vocab = [(s, 0.0) for s in specials] + [(s, -10.0) for s in symbols]
    vocab += [(w, -1.0) for w in words]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=1024, **tokens)


def qwen_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen2/Qwen3-style tokenizer: ChatML special tokens and Qwen3's chat template."""
    return unigram_tokenizer(
        QWEN_IMAGE_TEMPLATE.format("") + " user assistant",
        QWEN_SPECIALS,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=QWEN3_CHAT_TEMPLATE,
    )


def mistral_tokenizer() -> PreTrainedTokenizerFast:
    """Mistral-Small-3.1-style tokenizer with a chat template taking content lists."""
    return unigram_tokenizer(
        SYSTEM_MESSAGE,
        MISTRAL_SPECIALS,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=MISTRAL_CHAT_TEMPLATE,
    )


def qwen3_config(tokenizer: PreTrainedTokenizerFast, num_layers: int) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=LM_HIDDEN,
        intermediate_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
        initializer_range=LM_INIT,
    )


def one_block_vae(latent_channels: int, cls: type = AutoencoderKL, **extra: Any) -> Any:
    """A one-block VAE: scale factor 1 (the 128x128 default of the 128*scale pipelines)."""
    return cls(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        **extra,
    )


def four_block_vae(latent_channels: int, **extra: Any) -> AutoencoderKL:
    """A four-block VAE: scale factor 8, like the real SD/Flux VAEs."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 8),  # narrow: it decodes 1024x1024 by default
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=64,
        **extra,
    )


def louder_timestep(embedding: torch.nn.Module, factor: float) -> None:
    """Scale the weights of a transformer's timestep embedding MLP by ``factor``.

    Qwen-Image and AuraFlow gate every residual branch with adaLN outputs of the
    timestep embedding; at default init those gates are ~0.01 and the prompt and the
    CFG scale barely reach the pixels. Larger weights make the gates O(1).
    """
    with torch.no_grad():
        for name, weight in embedding.named_parameters():
            if name.endswith("weight"):
                weight.mul_(factor)


def qwen_image(workdir: Path) -> QwenImagePipeline:
    tokenizer = qwen_tokenizer()
    z_dim = 4
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=4 * z_dim,
        out_channels=z_dim,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=LM_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
    )
    louder_timestep(transformer.time_text_embed, 3.0)
    # No spatial downsampling: scale factor 2 ** len(temperal_downsample) == 1.
    qwen_vae = AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1],
        num_res_blocks=1,
        temperal_downsample=[],
        latents_mean=[0.0] * z_dim,
        latents_std=[1.0] * z_dim,
    )
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": LM_HIDDEN,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "bos_token_id": None,
            "initializer_range": LM_INIT,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": LM_HIDDEN,
        },
        vocab_size=len(tokenizer),
        hidden_size=LM_HIDDEN,
        initializer_range=LM_INIT,
    )
    return QwenImagePipeline(
        transformer=transformer,
        vae=qwen_vae,
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_shift=0.5,
            max_shift=0.9,
            base_image_seq_len=256,
            max_image_seq_len=8192,
            shift_terminal=0.02,
            use_dynamic_shifting=True,
        ),
        text_encoder=Qwen2_5_VLForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
    )


def flux2_transformer(joint_attention_dim: int, guidance_embeds: bool) -> Flux2Transformer2DModel:
    return Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=joint_attention_dim,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=guidance_embeds,
    )


def flux2_scheduler() -> FlowMatchEulerDiscreteScheduler:
    return FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)


def flux2(workdir: Path) -> Flux2Pipeline:
    tokenizer = mistral_tokenizer()
    ids = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Mistral3Config(
        text_config={
            "model_type": "mistral",
            "vocab_size": len(tokenizer),
            "hidden_size": LM_HIDDEN,
            "intermediate_size": 32,
            "max_position_embeddings": 1024,
            "num_attention_heads": 2,
            "num_hidden_layers": 30,  # the pipeline reads hidden states 10, 20 and 30
            "num_key_value_heads": 2,
            "head_dim": 8,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000000.0,
            "sliding_window": None,
            "initializer_range": LM_INIT,
            **ids,
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 16,
            "image_size": 30,
            "patch_size": 6,
            "num_channels": 3,
        },
        image_seq_length=4,
        vision_feature_layer=-1,
        image_token_index=tokenizer.convert_tokens_to_ids("[IMG]"),
        initializer_range=LM_INIT,
        **ids,
    )
    return Flux2Pipeline(
        scheduler=flux2_scheduler(),
        vae=one_block_vae(4, AutoencoderKLFlux2),
        text_encoder=Mistral3ForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
        transformer=flux2_transformer(3 * LM_HIDDEN, guidance_embeds=True),
    )


def flux2_klein(workdir: Path) -> Flux2KleinPipeline:
    tokenizer = qwen_tokenizer()
    # The pipeline reads hidden states 9, 18 and 27.
    text_encoder = Qwen3ForCausalLM(qwen3_config(tokenizer, num_layers=27)).eval()
    return Flux2KleinPipeline(
        scheduler=flux2_scheduler(),
        vae=one_block_vae(4, AutoencoderKLFlux2),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=flux2_transformer(3 * LM_HIDDEN, guidance_embeds=False),
        is_distilled=False,
    )


def z_image(workdir: Path) -> ZImagePipeline:
    tokenizer = qwen_tokenizer()
    transformer = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=LM_HIDDEN,
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=[8, 4, 4],
        axes_lens=[1024, 512, 512],
    )
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=False),
        vae=four_block_vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False),
        text_encoder=Qwen3Model(qwen3_config(tokenizer, num_layers=2)).eval(),
        tokenizer=tokenizer,
        transformer=transformer,
    )


def chroma(workdir: Path) -> ChromaPipeline:
    t5 = t5_tokenizer()
    transformer = ChromaTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=HIDDEN,
        axes_dims_rope=[4, 4, 8],
        approximator_hidden_dim=32,
        approximator_layers=1,
        approximator_num_channels=16,
    )
    return ChromaPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=one_block_vae(4, shift_factor=0.1159, scaling_factor=0.3611),
        text_encoder=t5_text_encoder(t5).eval(),
        tokenizer=t5,
        transformer=transformer,
        image_encoder=None,
        feature_extractor=None,
    )


def auraflow(workdir: Path) -> AuraFlowPipeline:
    t5 = t5_tokenizer()
    transformer = AuraFlowTransformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=HIDDEN,
        joint_attention_dim=HIDDEN,
        out_channels=4,
        pos_embed_max_size=4096,  # a 64x64 patch grid: 1024px through the 8x VAE
    )
    louder_timestep(transformer.time_step_proj, 4.0)
    config = UMT5Config(
        vocab_size=len(t5),
        d_model=HIDDEN,
        d_kv=8,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=t5.pad_token_id,
        eos_token_id=t5.eos_token_id,
        decoder_start_token_id=0,
    )
    return AuraFlowPipeline(
        tokenizer=t5,
        text_encoder=UMT5EncoderModel(config).eval(),
        vae=four_block_vae(4, scaling_factor=0.13025),
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.73),
    )


FAMILIES: dict[str, Callable[[Path], Any]] = {
    "qwen-image": qwen_image,
    "flux2": flux2,
    "flux2-klein": flux2_klein,
    "z-image": z_image,
    "chroma": chroma,
    "auraflow": auraflow,
}
