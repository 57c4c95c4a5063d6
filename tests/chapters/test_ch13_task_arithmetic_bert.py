"""Chapter 13's BERT forward, written in torch, against transformers' BertModel."""

from __future__ import annotations

import torch

from lowrank.chapters.ch13_task_arithmetic_bert import encode, load_minilm, mean_pool
from lowrank.data import text_tasks as tt
from lowrank.data.checkpoints import minilm_checkpoint


def test_forward_matches_transformers_bertmodel():
    from transformers import BertModel

    model = load_minilm(torch.float64)
    vocab = tt.load_vocab(minilm_checkpoint() / "vocab.txt")
    a, _ = tt.task_pair(vocab, 16, 0.0, seed=0)
    tokens = tt.tokenise(a.sample(6, 4, seed=0)[0], vocab)
    bert = BertModel.from_pretrained(str(minilm_checkpoint()), torch_dtype=torch.float64)
    bert.eval()
    with torch.no_grad():
        want = bert(input_ids=tokens).last_hidden_state
    got = encode(tokens, model)
    assert torch.allclose(got, want, atol=1e-9)
    assert torch.allclose(mean_pool(got), want.mean(dim=1), atol=1e-9)
    # starting from the hidden states after layer 3 gives the same output
    mid = encode(tokens, model, range(3))
    assert torch.allclose(encode(None, model, range(3, 6), mid), got, atol=1e-12)


def test_package_does_not_import_transformers():
    import subprocess
    import sys

    code = ("import sys, lowrank.chapters.ch13_task_arithmetic, lowrank.data.text_tasks; "
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
