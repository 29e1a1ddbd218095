"""Stand-in: the sdist ships no tests/utils/. `config_common_kwargs` are general settings every transformers
config accepts, each with a non-default value; ConfigTester checks that a config keeps every one of them.
Written by this project (the general keys of transformers' PretrainedConfig, one each)."""

config_common_kwargs = {
    "return_dict": False,
    "output_hidden_states": True,
    "output_attentions": True,
    "dtype": "float16",
    "chunk_size_feed_forward": 5,
    "architectures": ["CLIPModel"],
    "id2label": {0: "label"},
    "label2id": {"label": "0"},
    "problem_type": "regression",
    "tokenizer_class": "CLIPTokenizer",
    "bos_token_id": 6,
    "pad_token_id": 7,
    "eos_token_id": 8,
    "sep_token_id": 9,
    "tie_word_embeddings": False,
}
