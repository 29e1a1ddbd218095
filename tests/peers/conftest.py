"""Runs transformers' own common test mixins against torchclip (see mixins.py for where they come from).

Only this project's code redirects anything: the drivers (`test_peer_*.py`) name torchclip's classes where
transformers' CLIP tests name transformers' ones, and point the hub ids they would download at local
folders; the mixins' assertions are untouched. Without transformers VERSION installed, or without the sdist
(no registry and no cached copy), the peer tests are not collected and the run says why at its end:
nothing is counted as passed, and `scripts/peer_tests.py --compare` fails.

`make test` runs the subset in DEFAULT_SUBSET (small configs, ~1 minute); `make test-peers`
(`scripts/peer_tests.py`, or TORCHCLIP_PEERS=all) runs all of them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from mixins import VERSION, prepare  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

try:
    import transformers

    PROBLEM = None if transformers.__version__ == VERSION else f"needs transformers=={VERSION}"
except ImportError:
    PROBLEM = f"needs transformers=={VERSION} (not installed)"
if PROBLEM is None:
    try:
        sys.path.insert(0, str(prepare()))
    except (RuntimeError, OSError) as exc:
        PROBLEM = f"transformers {VERSION} sdist not available: {exc}"

if PROBLEM is not None:
    collect_ignore_glob = ["test_peer_*.py"]

# The tests the default `make test` runs (node ids within tests/peers/): fast ones, one or more per area the
# drop-in API touches; `make test-peers` runs all.
DEFAULT_SUBSET = (
    "test_peer_modeling.py::CLIPModelTest::test_config",
    "test_peer_modeling.py::CLIPTextModelTest::test_model_get_set_embeddings",
    "test_peer_modeling.py::CLIPModelTest::test_model_get_set_embeddings",
    "test_peer_modeling.py::CLIPTextModelTest::test_resize_embeddings_untied",
    "test_peer_modeling.py::CLIPTextModelTest::test_hidden_states_output",
    "test_peer_modeling.py::CLIPTextModelTest::test_config_attn_implementation_setter",
    "test_peer_modeling.py::CLIPTextModelTest::test_eager_matches_sdpa_inference_09_fp32_pad_left",
    "test_peer_modeling.py::CLIPTextModelTest::test_eager_matches_sdpa_inference_24_fp32_pad_left_output_attentions",
    "test_peer_modeling.py::CLIPTextModelTest::test_save_load",
    "test_peer_modeling.py::CLIPModelTest::test_internal_model_config_and_subconfig_are_same",
    "test_peer_modeling.py::CLIPModelTest::test_training",
    "test_peer_modeling.py::CLIPForImageClassificationTest::test_training",
    "test_peer_modeling.py::CLIPVisionModelTest::test_load_with_mismatched_shapes",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_right_and_left_truncation",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_padding_side_in_kwargs",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_truncation_side_in_kwargs",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_special_tokens_mask_input_pairs",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_padding_to_multiple_of",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_tokenizers_common_ids_setters",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_number_of_added_tokens",
    "test_peer_tokenization.py::CLIPTokenizationTest::test_prepare_seq2seq_batch",
    "test_peer_image_processing.py::CLIPImageProcessingTest::test_call_pil",
    "test_peer_image_processing.py::CLIPImageProcessingTest::test_call_numpy",
    "test_peer_image_processing.py::CLIPImageProcessingTest::test_call_pytorch",
    "test_peer_image_processing.py::CLIPImageProcessingTest::test_image_processor_to_json_file",
    "test_peer_image_processing.py::CLIPImageProcessingTest::test_image_processor_from_and_save_pretrained",
    "test_peer_processing.py::CLIPProcessorTest::test_processor_to_json_string",
    "test_peer_processing.py::CLIPProcessorTest::test_unstructured_kwargs_0_images",
    "test_peer_processing.py::CLIPProcessorTest::test_structured_kwargs_nested_from_dict_0_images",
    "test_peer_processing.py::CLIPProcessorTest::test_overlapping_text_image_kwargs_handling_0_images",
    "test_peer_processing.py::CLIPProcessorTest::test_subprocessor_defaults_preserved_by_kwargs_0_images",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("TORCHCLIP_PEERS") == "all":
        return
    selected, deselected = [], []
    for item in items:
        in_peers = Path(str(item.fspath)).parent == Path(__file__).parent
        in_subset = any(item.nodeid.endswith(name) for name in DEFAULT_SUBSET)
        (deselected if in_peers and not in_subset else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_configure(config: pytest.Config) -> None:
    """The markers transformers' own pytest configuration registers."""
    for marker in ("flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test",
                   "torch_export_test", "generate", "is_training_test", "is_tensor_parallel_test",
                   "is_pipeline_test", "is_staging_test", "accelerate_tests", "not_device_test",
                   "training_ci", "bitsandbytes", "flax", "agent_tests"):  # fmt: skip
        config.addinivalue_line("markers", f"{marker}: a transformers test marker")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say why the peer tests were not collected, so a run without them is not mistaken for a clean one."""
    if PROBLEM is not None:
        terminalreporter.write_line(f"transformers' peer tests (tests/peers) were not collected: {PROBLEM}")
