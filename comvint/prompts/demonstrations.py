"""One worked demonstration per stage and family, written by us from real annotations.

Cross-modal: Flickr30k Entities image 128396150 (val split: two cyclists resting on a bench), its
captions and boxes rendered exactly as a real call renders them. Outside knowledge: Visual Genome
image 15 (a desk with a Dell computer), its regions merged and capped to 15 lines by the same
renderer. The questions, answers, verdicts and evidence are ours. ``tests/comvint/test_prompts.py``
checks that each reply passes its stage's schema and handler, that its grounding ids exist in its
annotations, and (when the real files are present) that the annotation text is what the renderer
makes of them.
"""

from __future__ import annotations

from typing import Any

from comvint.prompts.templates import CROSS_MODAL, OUTSIDE_KNOWLEDGE, generate_input, item_input

FLICKR_ANNOTATIONS = """Image size: 500 x 333 pixels
A bike riding couple [301, 70, 388, 235] [228, 74, 295, 207] dressed in bike gear [300, 100, 417, 212] and helmets [237, 73, 283, 108] [310, 67, 363, 102] take a minute to site on a bench [61, 197, 499, 283] to talk and park their bikes [27, 105, 309, 296] [1, 112, 217, 288] .
Two bikers [301, 70, 388, 235] [228, 74, 295, 207] [219, 64, 290, 208] are sitting and talking on a bench [61, 197, 499, 283] in front if their bikes [27, 105, 309, 296] [1, 112, 217, 288] .
Two people [301, 70, 388, 235] [228, 74, 295, 207] rest on a park bench [61, 197, 499, 283] next to their bikes [27, 105, 309, 296] [1, 112, 217, 288] .
Women [301, 70, 388, 235] [228, 74, 295, 207] in bike helmets [237, 73, 283, 108] [310, 67, 363, 102] take break from long ride .
Two bikers [301, 70, 388, 235] [228, 74, 295, 207] [219, 64, 290, 208] take a break on a bench [61, 197, 499, 283] .

Entity ids:
e:7237 = their bikes
e:7233 = A bike riding couple, Two people, Women
e:7238 = Two bikers
e:7236 = a bench, a park bench
e:7235 = helmets, bike helmets
e:7234 = bike gear"""

VG_ANNOTATIONS = """Image size: 800 x 600 pixels
r:4222 monitor is has been turned off / monitor of a Dell desktop computer X: 85 Y: 42 Width: 456 Height: 321
r:4225 Mouse pad is black and silver / mouse pad is on the desk X: 557 Y: 457 Width: 214 Height: 141
r:4624 a dell keyboard with grey keys and white keys / Keyboard is gray and white X: 97 Y: 387 Width: 476 Height: 161
r:5027 a brown box is at the edge X: 5 Y: 168 Width: 85 Height: 144
r:5429 newspaper with crossword visible / a newspaper is on the desk X: 3 Y: 362 Width: 121 Height: 204
r:5431 picture was taken indoors X: 11 Y: 12 Width: 787 Height: 586
r:5825 the room appears to be well lit X: 62 Y: 168 Width: 448 Height: 424
r:6222 red thing is on the comp / red thing is on the computer X: 85 Y: 36 Width: 66 Height: 76
r:7027 rumpled up Kleenex tissue X: 61 Y: 350 Width: 68 Height: 57
r:7030 something gooey stuck on computer monitor X: 85 Y: 50 Width: 51 Height: 41
r:7422 individual serve condiment packet / ketchup condiment packet X: 763 Y: 462 Width: 35 Height: 59
r:7425 cardboard boxes on top of desk X: 0 Y: 169 Width: 58 Height: 188
r:7430 paper napkin with writing on it X: 616 Y: 321 Width: 144 Height: 113
r:7826 various papers stacked loosely on tabletop X: 576 Y: 293 Width: 221 Height: 162
r:7830 metal brackets for wall shelves X: 100 Y: 3 Width: 381 Height: 37"""
VG_TOPICS = [
    "Brands, Companies and Products",
    "Cooking and Food",
    "Geography, History, Language and Culture",
    "Science and Technology",
    "Objects, Materials and Clothing",
]
VG_TOPIC = "condiment packet"

BENCH_QUESTION = {
    "instruction": "What are the two people sitting on while their bikes are parked?",
    "answer": "A park bench.",
}
KEYBOARD_QUESTION = {
    "instruction": "The company whose name is on this keyboard was founded in which US state?",
    "answer": "Texas.",
}
PACKET_QUESTION = {
    "instruction": "Explain what the small packet at the right edge of the desk usually holds and which plant it is mostly made from.",
    "answer": "A single serving of ketchup, a condiment made mostly from tomatoes.",
}

GENERATE_REPLIES = {
    CROSS_MODAL: {
        "items": [
            {
                "instruction": "Are the two cyclists still riding, or have they stopped? What in the picture tells you?",
                "answer": "They have stopped: both sit on a bench in their helmets and bike gear, with their bikes parked next to them.",
                "grounding": ["e:7233", "e:7236", "e:7235", "e:7234", "e:7237"],
                "knowledge_topic": "",
            },
            {
                "instruction": "Is the bench in front of the bikes, or are the bikes in front of the bench?",
                "answer": "The bench is in front of the bikes: the two riders sit on it with their bikes parked just behind them.",
                "grounding": ["e:7236", "e:7237", "e:7233"],
                "knowledge_topic": "",
            },
            {
                "instruction": "What are the two riders doing on the bench, and what do they wear on their heads?",
                "answer": "They are resting and talking to each other, and both still wear their bike helmets.",
                "grounding": ["e:7233", "e:7236", "e:7235"],
                "knowledge_topic": "",
            },
        ]
    },
    OUTSIDE_KNOWLEDGE: {
        "items": [
            {
                "instruction": "The company whose name is on this keyboard was founded in which US state, and by whom?",
                "answer": "Texas: Michael Dell founded Dell in Austin in 1984.",
                "grounding": ["r:4624"],
                "knowledge_topic": "Brands, Companies and Products",
            },
            {
                "instruction": PACKET_QUESTION["instruction"],
                "answer": PACKET_QUESTION["answer"],
                "grounding": ["r:7422"],
                "knowledge_topic": "Cooking and Food",
            },
            {
                "instruction": "Name the word puzzle printed in the newspaper on the left of the desk, and say how its grid is filled.",
                "answer": "A crossword: words answering numbered clues are written letter by letter into the white squares.",
                "grounding": ["r:5429"],
                "knowledge_topic": "Geography, History, Language and Culture",
            },
        ]
    },
}

COMPLICATE_CASES = {
    CROSS_MODAL: (
        BENCH_QUESTION,
        "commonsense",
        {
            "instruction": "What are the two people sitting on while their bikes are parked, and why would riders in helmets stop there?",
            "answer": "A park bench: on a long ride, cyclists stop at a bench to rest and talk before riding on.",
            "grounding": ["e:7233", "e:7236", "e:7235"],
            "knowledge_type": "commonsense",
        },
    ),
    OUTSIDE_KNOWLEDGE: (
        KEYBOARD_QUESTION,
        "knowledge-base",
        {
            "instruction": "The company whose name is on this keyboard was founded in a US state: what is that state's capital city?",
            "answer": "Austin: Dell was founded in Texas, whose capital is Austin.",
            "grounding": ["r:4624"],
            "knowledge_type": "knowledge-base",
        },
    ),
}

VERIFY_CASES = {
    CROSS_MODAL: (
        {
            "instruction": "How many bikes are parked next to the bench, and which rider owns the red one?",
            "answer": "Two bikes; the woman on the left owns the red one.",
        },
        {
            "evidence": "The captions show two bikes (e:7237, two boxes) next to the bench (e:7236), but they never give the bikes' "
            "colours or say whose bike is whose: the second half is not supported by the image content, so (1) fails.",
            "verdict": "no",
        },
    ),
    OUTSIDE_KNOWLEDGE: (
        {
            **COMPLICATE_CASES[OUTSIDE_KNOWLEDGE][2],
            "_parent_instruction": KEYBOARD_QUESTION["instruction"],
            "_parent_answer": KEYBOARD_QUESTION["answer"],
        },
        {
            "evidence": "r:4624 is a Dell keyboard; Dell was founded in Austin, Texas, and Austin is the capital of Texas, so the answer "
            "is right. The brand must be read from the image and the question names neither it nor the state, so it needs "
            "the image and cannot be answered from its text. It builds on the earlier answer (Texas) and adds a hop (its capital).",
            "verdict": "yes",
        },
    ),
}

VERIFY_CLOSED_CASES = {
    CROSS_MODAL: (
        {
            "instruction": "What are the two riders sitting on?",
            "options": ["A picnic table", "A park bench", "Their bikes", "A low stone wall"],
            "answer": "A park bench",
        },
        {
            "evidence": "The riders (e:7233) sit on a park bench (e:7236). Their bikes (e:7237) are parked behind it, and no table or "
            "wall appears, so every other option is wrong; which seat they use must be seen in the image.",
            "verdict": "yes",
        },
    ),
    OUTSIDE_KNOWLEDGE: (
        {"instruction": "Is the small packet at the right edge of the desk a serving of mustard?", "answer": "no"},
        {
            "evidence": "r:7422 is a ketchup condiment packet at the right edge of the desk (X 763 of 800), not mustard, so the answer "
            "'no' is right; what the packet holds must be seen in the image.",
            "verdict": "yes",
        },
    ),
}

REFORMULATE_CASES = {
    CROSS_MODAL: (
        BENCH_QUESTION,
        {
            "bool_positive": "Are the two cyclists sitting on a park bench while their bikes are parked?",
            "bool_negative": "Are the two cyclists sitting on their bikes next to a park bench?",
            "mc_question": "What are the two cyclists sitting on while their bikes are parked?",
            "correct_option": "A park bench",
            "distractors": ["Their bikes", "A picnic table", "A low stone wall"],
            "bool_positive_grounding": ["e:7233", "e:7236", "e:7237"],
            "bool_negative_grounding": ["e:7233", "e:7236", "e:7237"],
            "mc_grounding": ["e:7233", "e:7236"],
        },
    ),
    OUTSIDE_KNOWLEDGE: (
        PACKET_QUESTION,
        {
            "bool_positive": "Does the small packet at the right edge of the desk hold ketchup, a condiment made mostly from tomatoes?",
            "bool_negative": "Does the small packet at the right edge of the desk hold soy sauce, a condiment made mostly from soybeans?",
            "mc_question": "The small packet at the right edge of the desk holds a condiment made mostly from which plant?",
            "correct_option": "Tomatoes",
            "distractors": ["Soybeans", "Mustard seeds", "Cucumbers"],
            "bool_positive_grounding": ["r:7422"],
            "bool_negative_grounding": ["r:7422"],
            "mc_grounding": ["r:7422"],
        },
    ),
}

ANNOTATIONS = {CROSS_MODAL: FLICKR_ANNOTATIONS, OUTSIDE_KNOWLEDGE: VG_ANNOTATIONS}


def demonstration(stage: str, family: str, n: int = 3) -> tuple[str, dict[str, Any]]:
    """(user turn, assistant reply) of one stage's worked example for one family (synthesis shows ``n`` items, at most 3)."""
    text = ANNOTATIONS[family]
    if stage == "generate":
        reply = GENERATE_REPLIES[family]
        topics = VG_TOPICS if family == OUTSIDE_KNOWLEDGE else None
        return generate_input(text, topics, VG_TOPIC if topics else None), {"items": reply["items"][:n]}
    if stage == "complicate":
        item, ktype, reply = COMPLICATE_CASES[family]
        return item_input(text, item, ktype), reply
    cases = {"verify": VERIFY_CASES, "verify_reformulated": VERIFY_CLOSED_CASES, "reformulate": REFORMULATE_CASES}[
        stage
    ]
    item, reply = cases[family]
    return item_input(text, item), reply
