"""`minilm chat`: talk with a pretrained model (.gguf file or Hugging Face folder) in the terminal."""

from __future__ import annotations

import sys

from .common import CommandError


def add_parser(commands) -> None:
    chat = commands.add_parser("chat", help="chat with a model (.gguf file or Hugging Face folder), streaming replies")
    chat.add_argument("path", help="a .gguf file, a Hugging Face model folder (config.json + safetensors), a LoRA "
                                   "adapter folder or a `minilm finetune --lora` run")
    chat.add_argument("--prompt", default=None, help="answer this one message and exit (for scripts)")
    chat.add_argument("--system", default=None, help="the system prompt (default: the chat template's own)")
    chat.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy (default 0.7)")
    chat.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling probability mass (default 0.9)")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    chat.add_argument("--context", type=int, default=None,
                      help="tokens of history kept (default: the model's context window)")
    chat.add_argument("--seed", type=int, default=None, help="seed for reproducible replies")
    chat.set_defaults(run=run)


def run(args) -> int:
    from ..chat import ChatError, ChatSession, interact, load_pretrained

    try:
        model, tokenizer = load_pretrained(args.path)
        session = ChatSession(model, tokenizer, system=args.system, max_new_tokens=args.max_new_tokens,
                              temperature=args.temperature, top_p=args.top_p, seed=args.seed, context=args.context)
        if args.prompt is None:
            interact(session)
            return 0
        for piece in session.reply(args.prompt):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except (ChatError, FileNotFoundError) as error:
        raise CommandError(str(error)) from None
    return 0
