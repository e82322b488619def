"""Attack rules for the same attacks written in German, French, Spanish, Italian,
Portuguese, Dutch and Polish (2026-12-06); `attack_rules` runs them after the English
ones.

Five rules a language, named after the English rule they translate plus the language
(``override-instructions-de``); "forget everything above, from now on ..." and "new
instructions from your developers" are in ``override-instructions-*``, a persona
without rules and "you are no longer an assistant" in ``unbound-persona-*``. Accented
letters are matched with and without their accent ("pr[ée]c[ée]dentes"). As in
English, the assistant's instructions are named (your / all / previous ...):
"ignorieren Sie meine vorherige E-Mail" and "vergiss nicht, die Anweisungen auf der
Packung zu lesen" are not attacks. Each rule's words are whole words of which every
match contains one (`attack_rules.match_rules` looks them up among the text's words); a
verb list that is a rule's words is written once and built into its pattern with
`_alt`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["ALSO_NEEDS", "INTL_RULES"]

_Q = r"[\"'„“”«»‚‘’]?\s*"  # an opening quotation mark, if any
_REST = r"[^.?!\n]{0,40}?"  # the rest of a clause


def _any(*parts: str) -> str:
    return "(?:" + "|".join(parts) + ")"


def _variants(stem: str, first: str, second: str, end: str) -> set[str]:
    """A word with (up to) two letters written with or without their accent: ("instru",
    "çc", "õo", "es") is instruções, instrucões, instruçoes and instrucoes."""
    return {stem + a + b + end for a in first for b in second or [""]}


def _alt(words: Iterable[str]) -> str:
    """An alternation of exactly these words (longest first): its rule's words, so that
    every match holds one whole."""
    return "(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + ")"


_DE_SHOW = {
    *("zeig", "zeige", "zeigen", "zeigt", "zeigst", "nenn", "nenne", "nennen"),
    *("verrat", "verrate", "verraten", "verrätst", "verratst", "wiederhol", "wiederhole"),
    *("wiederholen", "offenbare", "offenbaren", "enthülle", "enthüllen", "enthulle"),
    *("enthullen", "ausgeben", "kopiere", "kopieren", "drucke", "drucken"),
}
_FR_SHOW = {
    stem + end
    for stem in (
        "affiche",
        "montre",
        "donne",
        "recopie",
        "imprime",
        "divulgue",
        "communique",
        "copie",
        *(f"r{a}v{b}le" for a in "ée" for b in "èée"),
        *(f"r{a}p{b}te" for a in "ée" for b in "èée"),
    )
    for end in ("", "z", "r")
}
_ES_SHOW = {
    *("muestra", "muéstrame", "muestrame", "muéstranos", "muestranos", "muestre"),
    *("muéstreme", "muestreme", "enseña", "ensena", "enséñame", "enseñame", "ensename"),
    *("revela", "revélame", "revelame", "revele", "revéleme", "reveleme", "dime"),
    *("dígame", "digame", "dame", "deme", "déme", "repite", "repíteme", "repiteme"),
    *("repita", "repítame", "repitame", "imprime", "imprima", "copia", "copie"),
    *("comparte", "comparta", "compárteme", "comparteme", "divulga", "divulgue"),
}
_NL_SHOW = {
    *("toon", "toont", "tonen", "herhaal", "herhalen", "onthul", "onthullen", "kopieer"),
    *("kopiëren", "kopieren"),
}

_PL_SHOW_FORMS = {
    verb + plural
    for verb in (
        "ujawnij",
        "podaj",
        "powiedz",
        "wypisz",
        "wydrukuj",
        "skopiuj",
        *_variants("poka", "żz", "", ""),
        *_variants("powt", "óo", "", "rz"),
        *_variants("zdrad", "źz", "", ""),
        *_variants("udost", "ęe", "", "pnij"),
        *_variants("wy", "śs", "", "wietl"),
    )
    for plural in ("", "cie")
}


# German
_DE_IGNORE = (
    r"(?:ignorier(?:e|en|t|st)?|vergiss|vergessen|missachte(?:n|t|st)?|[üu]bergeh(?:e|en)?)"
)
_DE_QUAL = (
    r"(?:vorherigen|vorigen|bisherigen|fr(?:ü|u|ue)heren|obigen|vorangegangenen|vorangehenden"
    r"|vorausgegangenen|urspr(?:ü|u|ue)nglichen)"
)
_DE_NOUN = (
    r"(?:(?:system|sicherheits)?(?:anweisungen|instruktionen|richtlinien)|befehle"
    r"|programmierung|system-?prompts?|(?:system|sicherheits)(?:regeln|einstellungen))"
)
_DE_OBJECT = _any(
    rf"(?:alle|jegliche|s[äa]mtliche)\s+(?:deine\s+|ihre\s+|eure\s+|die\s+)?(?:{_DE_QUAL}\s+)?{_DE_NOUN}",
    rf"(?:deine|ihre|eure)\s+(?:{_DE_QUAL}\s+)?{_DE_NOUN}",
    rf"(?:die\s+)?{_DE_QUAL}\s+{_DE_NOUN}",
)
_DE_AI = r"\b(?:ki|k\.i\.|sprachmodell|ki-assistent(?:in|en)?|ki-system)"

# French
_FR_IGNORE = (
    r"(?:ignorez?|ignorer|oublie[sz]?|oublier|n[ée]glige[zr]?|contourne[zr]?"
    r"|outrepasse[zr]?|fais\s+abstraction\s+de|faites\s+abstraction\s+de)"
)
_FR_QUAL = (
    r"(?:pr[ée]c[ée]dent(?:e|s|es)?|ant[ée]rieur(?:e|s|es)?|initia(?:l|le|les|ux)"
    r"|origina(?:l|le|les|ux)|d['’]origine|ci-dessus|du\s+syst[èe]me|syst[èe]me)"
)
_FR_NOUN = r"(?:instructions?|consignes|directives|ordres|indications|programmation|prompt)"
_FR_OBJECT = _any(
    rf"(?:toutes|tous)\s+(?:les\s+|tes\s+|vos\s+)?{_FR_NOUN}(?:\s+{_FR_QUAL})?",
    rf"(?:tes|vos|ta|ton|votre)\s+(?:premi[èe]res\s+)?{_FR_NOUN}",
    rf"(?:les\s+|la\s+|le\s+|l['’]){_FR_NOUN}\s+{_FR_QUAL}",
)

# Spanish
_ES_IGNORE = (
    r"(?:ignora|ignore|ignorar|ignoren|olvida|olvide|olvidar|olviden|omite|omita"
    r"|descarta|descarte|pasa\s+por\s+alto|haz\s+caso\s+omiso\s+(?:a|de))"
)
_ES_QUAL = (
    r"(?:anteriores?|previas?|previos?|precedentes?|iniciales?|originales?|de\s+arriba"
    r"|del\s+sistema|de\s+sistema)"
)
_ES_NOUN = (
    r"(?:instrucciones|indicaciones|directrices|directivas|[óo]rdenes|programaci[óo]n|prompt)"
)
_ES_NOUN_BARE = r"(?:instrucciones|indicaciones|directrices|directivas|[óo]rdenes|programaci[óo]n)"
_ES_OBJECT = _any(
    rf"(?:todas|todos)\s+(?:las\s+|los\s+|tus\s+|sus\s+)?{_ES_NOUN}(?:\s+{_ES_QUAL})?",
    rf"(?:tus|sus|vuestras|tu|su)\s+{_ES_NOUN}",
    rf"(?:(?:las|los|la|el)\s+{_ES_NOUN}|{_ES_NOUN_BARE})\s+{_ES_QUAL}",
)

# Italian
_IT_IGNORE = (
    r"(?:ignora|ignori|ignorare|dimentica|dimentichi|dimenticare|tralascia|tralasci"
    r"|trascura|trascuri|scavalca|non\s+tenere\s+conto\s+d(?:elle|ei|egli))"
)
_IT_QUAL = (
    r"(?:precedenti|iniziali|originali|originarie|di\s+sistema|del\s+sistema|di\s+prima"
    r"|soprastanti)"
)
_IT_NOUN = r"(?:istruzioni|indicazioni|direttive|linee\s+guida|ordini|programmazione|prompt)"
_IT_OBJECT = _any(
    rf"(?:tutte|tutti)\s+(?:le\s+|i\s+|gli\s+)?(?:tue\s+|sue\s+|vostre\s+)?(?:{_IT_QUAL}\s+)?"
    rf"{_IT_NOUN}(?:\s+{_IT_QUAL})?",
    rf"(?:le\s+|i\s+)?(?:tue|sue|vostre|tuoi|suoi)\s+(?:{_IT_QUAL}\s+)?{_IT_NOUN}",
    rf"(?:le\s+|gli\s+|i\s+|l['’])?(?:{_IT_QUAL}\s+{_IT_NOUN}|{_IT_NOUN}\s+{_IT_QUAL})",
)

# Portuguese
_PT_IGNORE = (
    r"(?:ignore|ignora|ignorar|ignorem|esque[çc]a|esquece|esquecer|desconsidere"
    r"|desconsidera|desconsiderar|despreze|descarte|descarta)"
)
_PT_QUAL = r"(?:anteriores?|pr[ée]vias?|iniciais|originais|acima|do\s+sistema|de\s+sistema)"
_PT_NOUN = (
    r"(?:instru[çc][õo]es|orienta[çc][õo]es|diretrizes|diretivas|ordens|programa[çc][ãa]o"
    r"|prompt)"
)
_PT_NOUN_BARE = (
    r"(?:instru[çc][õo]es|orienta[çc][õo]es|diretrizes|diretivas|ordens|programa[çc][ãa]o)"
)
_PT_OBJECT = _any(
    rf"(?:todas|todos)\s+(?:as\s+|os\s+)?(?:suas\s+|tuas\s+)?{_PT_NOUN}(?:\s+{_PT_QUAL})?",
    rf"(?:as\s+|os\s+)?(?:suas|tuas|vossas|seus|teus)\s+(?:{_PT_QUAL}\s+)?{_PT_NOUN}",
    rf"(?:as\s+|os\s+)?{_PT_NOUN_BARE}\s+{_PT_QUAL}",
)

# Dutch
_NL_QUAL = r"(?:vorige|eerdere|voorgaande|bovenstaande|oorspronkelijke|originele|initi[eë]le)"
_NL_NOUN = (
    r"(?:(?:systeem|veiligheids)?(?:instructies|aanwijzingen|richtlijnen)|opdrachten"
    r"|programmering|systeem-?prompts?|(?:systeem|veiligheids)(?:regels|instellingen))"
)
_NL_OBJECT = _any(
    rf"(?:alle|al\s+(?:je|jouw|uw|de))\s+(?:{_NL_QUAL}\s+)?{_NL_NOUN}",
    rf"(?:je|jouw|uw)\s+(?:{_NL_QUAL}\s+)?{_NL_NOUN}",
    rf"(?:de\s+)?{_NL_QUAL}\s+{_NL_NOUN}",
)

# Polish
_PL_QUAL = (
    r"(?:poprzedni\w*|wcze[śs]niejsz\w*|dotychczasow\w*|powy[żz]sz\w*|pierwotn\w*"
    r"|pocz[ąa]tkow\w*|systemow\w*|oryginaln\w*)"
)
_PL_NOUN = r"(?:instrukcj\w*|polece[ńn]\w*|wytyczn\w*|dyrektyw\w*|prompt\w*)"
_PL_OBJECT = _any(
    rf"(?:wszystki\w*|wszelki\w*)\s+(?:(?:swoj|swoi|twoj|twoi|wasz)\w*\s+)?(?:{_PL_QUAL}\s+)?{_PL_NOUN}",
    rf"(?:swoj|swoi|twoj|twoi|wasz)\w*\s+(?:{_PL_QUAL}\s+)?{_PL_NOUN}",
    rf"(?:{_PL_QUAL}\s+{_PL_NOUN}|{_PL_NOUN}\s+{_PL_QUAL})",
)

# A second set of words for the rules whose first set English text often holds ("la",
# "todo", "k", "intelligence", "ben"): every match also holds one of these whole.
ALSO_NEEDS: dict[str, frozenset[str]] = {
    "override-instructions-fr": frozenset(
        {"instruction", "instructions", "consignes", "directives", "ordres", "indications"}
        | {"programmation", "prompt", "tout"}
    ),
    "override-instructions-es": frozenset(
        {"instrucciones", "indicaciones", "directrices", "directivas", "órdenes", "ordenes"}
        | {"programación", "programacion", "prompt", "todo"}
    ),
    "note-to-the-ai-de": frozenset({"ki", "k", "sprachmodell"}),
    "note-to-the-ai-fr": frozenset(
        {"note", "message", "remarque", "instruction", "instructions", "attention", "avis"}
        | {"p", "ps"}
    ),
    "unbound-persona-nl": frozenset({"zonder", "vrij", "geen", "niet"}),
}

INTL_RULES: tuple[tuple[str, frozenset[str], re.Pattern[str]], ...] = (
    # ---- German
    (
        "override-instructions-de",
        frozenset(
            {
                *("ignoriere", "ignorieren", "ignoriert", "ignorierst", "ignorier", "vergiss"),
                *("vergessen", "missachte", "missachten", "missachtet", "missachtest"),
                *("übergehe", "übergehen", "übergeh", "ubergehe", "ubergehen", "ubergeh"),
                *("anweisung", "anweisungen"),
            }
        ),
        re.compile(
            rf"\b{_DE_IGNORE}\s+(?:sie\s+)?(?:bitte\s+)?{_DE_OBJECT}"
            # verb last: "vergessen" only after "zu" ("ich habe die vorherigen Anweisungen
            # vergessen" is a user who forgot them)
            rf"|\b{_DE_OBJECT}\s+(?:(?:zu\s+)?(?:ignorieren|ignorierst|missachten|missachtest"
            r"|[üu]bergehen)|zu\s+vergessen)\b"
            r"|\b(?:vergiss|vergessen\s+sie|ignorier(?:e|en\s+sie))\s+alles,?\s+(?:was\s+)?"
            r"(?:oben|obige|hier\s+oben|zuvor|davor)\b[^.?!\n]{0,30}?[.,;:!]?\s*"
            r"(?:ab\s+(?:jetzt|sofort)|von\s+nun\s+an|stattdessen|du\s+bist|sie\s+sind)\b"
            r"|\bneue\s+anweisung(?:en)?\s+(?:von|vom)\s+(?:deinen|ihren|den|dem)?\s*"
            r"(?:entwickler\w*|erstelle\w*|sch[öo]pfer\w*|admin\w*|betreiber\w*|system)\b"
        ),
    ),
    (
        "prompt-leak-de",
        frozenset({*_DE_SHOW, "gib", "geben", "lautet", "steht"}),
        re.compile(
            r"\b(?:gib\s+mir|geben\s+sie\s+mir|"
            + _alt(_DE_SHOW)
            + r")\b"
            + _REST
            + r"\b"
            + _any(
                # a configuration only if hidden / original ... (the English rule's
                # qualifiers): "deine komplette Konfiguration der Firewall" is not one
                r"(?:deinen|deine|dein|deinem|ihren|ihre|ihr|ihrem)\s+(?:\w+e[nmrs]?\s+)?"
                r"(?:system-?(?:prompt|anweisungen|nachricht|instruktionen|konfiguration)"
                r"|(?:versteckt|geheim|urspr[üu]nglich|intern|vertraulich|vollst[äa]ndig"
                r"|komplett|gesamt|ersten)\w*\s+(?:prompt|anweisungen|instruktionen)"
                r"|(?:versteckt|geheim|urspr[üu]nglich|vertraulich)\w*\s+konfiguration)",
                r"(?:den|die|das|dem)\s+(?:system-?(?:prompt|anweisungen|nachricht|instruktionen)"
                r"|(?:versteckt|geheim|urspr[üu]nglich|vertraulich)\w*\s+(?:prompt"
                r"|anweisungen|instruktionen|konfiguration)|intern\w*\s+prompt)",
            )
            # a question names the prompt, system or hidden instructions: "wie lautet die
            # interne Konfiguration des Servers?" and "what are your initial instructions
            # for the shelf?" are everyday questions
            + r"|\b(?:wie\s+lautet|was\s+steht\s+in)\b"
            + _REST
            + r"\b(?:(?:deinen|deine|dein|deinem|ihren|ihre|ihr|ihrem)\s+(?:\w+e[nmrs]?\s+)?"
            r"(?:system-?(?:prompt|anweisungen|nachricht|instruktionen)|prompt"
            r"|(?:versteckt|geheim|vertraulich)\w*\s+(?:anweisungen|instruktionen))"
            r"|(?:den|die|das|dem)\s+(?:\w+e[nmrs]?\s+)?system-?(?:prompt|anweisungen"
            r"|nachricht|instruktionen))"
        ),
    ),
    (
        "note-to-the-ai-de",
        frozenset(
            {"hinweis", "nachricht", "notiz", "anmerkung", "anweisung", "anweisungen"}
            | {"achtung", "wichtig", "p", "ps"}
        ),
        re.compile(
            r"\b(?:(?:hinweis|nachricht|notiz|anmerkung|anweisung(?:en)?|achtung|wichtig)\b"
            r"|p\.?s\b\.?)"
            r"\s*(?:an|f[üu]r|,)?\s*(?:die\s+|das\s+|den\s+)?"
            + _DE_AI
            + r"(?:\s*[:,]|\s(?:die|der|welche|das)\s)"
        ),
    ),
    (
        "sure-here-is-de",
        frozenset({"antwort"}),
        re.compile(
            r"\b(?:beginne|beginn|beginnen\s+sie|starte|starten\s+sie|fang|fange|fangen\s+sie"
            r"|er[öo]ffne)\s+(?:deine|ihre)\s+antwort\s+mit\s+"
            + _Q
            + r"(?:nat[üu]rlich|sicher|klar|gerne?|selbstverst[äa]ndlich|okay|ok|ja)\b[,!]?\s*"
            r"hier\s+(?:ist|sind|kommt|kommen)\b"
        ),
    ),
    (
        "unbound-persona-de",
        frozenset(
            {
                *("ohne", "frei", "gebunden", "ki", "assistent", "assistentin"),
                *("sprachmodell", "chatbot", "chatgpt", "als"),
            }
        ),
        re.compile(
            r"\b(?:du\s+bist|sie\s+sind)\b" + _REST + r"\b(?:eine?\s+)?"
            r"(?:ki|k\.i\.|ai|bot|chatbot|modell|sprachmodell|assistent\w*|gpt|persona)\s+"
            r"(?:ohne\s+(?:jegliche\s+|alle\s+|irgendwelche\s+)?|frei\s+von\s+(?:allen\s+)?)"
            r"(?:regeln|einschr[äa]nkungen|beschr[äa]nkungen|grenzen|filter|richtlinien|ethik"
            r"|moral|zensur)"
            # "Sie sind nicht an die Regeln gebunden" may be "they": not without "mehr"
            # or "irgendwelche"
            r"|\b(?:du\s+bist\s+(?:nicht\s+(?:mehr\s+|l[äa]nger\s+)?an\s+(?:irgendwelche\s+"
            r"|jegliche\s+)?|an\s+keine(?:rlei)?\s+)|sie\s+sind\s+nicht\s+(?:(?:mehr|l[äa]nger)"
            r"\s+an\s+(?:irgendwelche\s+|jegliche\s+)?|an\s+(?:irgendwelche|jegliche)\s+))(?:regeln"
            r"|richtlinien|einschr[äa]nkungen|vorgaben|gesetze|ethik|moral|openai)\w*\s+gebunden\b"
            r"|\b(?:du\s+bist|sie\s+sind)\s+(?:jetzt\s+|nun\s+)?(?:keine?\s+(?:ki|assistent(?:in)?"
            r"|sprachmodell|chatbot|chatgpt)\s+mehr|nicht\s+(?:mehr|l[äa]nger)\s+(?:eine?\s+)?"
            r"(?:ki|assistent(?:in)?|sprachmodell|chatbot|chatgpt))\b"
            r"|\btu\s+so,?\s+als\s+(?:ob\s+du\s+keine|h[äa]ttest\s+du\s+keine)\s+(?:regeln"
            r"|einschr[äa]nkungen|richtlinien|filter|grenzen)"
        ),
    ),
    # ---- French
    (
        "override-instructions-fr",
        frozenset(
            {
                *("ignore", "ignores", "ignorez", "ignorer", "oublie", "oublies", "oubliez"),
                *("oublier", "neglige", "néglige", "negligez", "négligez", "negliger"),
                *("négliger", "contourne", "contournez", "contourner", "outrepasse"),
                *("outrepassez", "outrepasser", "fais", "faites", "nouvelles"),
            }
        ),
        re.compile(
            rf"\b{_FR_IGNORE}\s+{_FR_OBJECT}\b"
            r"|\b(?:oublie[sz]?|ignore[sz]?)\s+tout\s+(?:ce\s+qui\s+(?:pr[ée]c[èe]de|est\s+"
            r"(?:au-dessus|ci-dessus|plus\s+haut))|ce\s+qui\s+a\s+[ée]t[ée]\s+dit\s+"
            r"(?:avant|plus\s+haut)|ci-dessus|le\s+reste)\b[^.?!\n]{0,30}?[.,;:!]?\s*"
            r"(?:[àa]\s+partir\s+de\s+maintenant|d[ée]sormais|dor[ée]navant|maintenant"
            r"|[àa]\s+pr[ée]sent|tu\s+es|vous\s+[êe]tes)\b"
            r"|\bnouvelles\s+instructions\s+(?:de|des|du)\s+(?:tes|vos|la|l['’])?\s*"
            r"(?:d[ée]veloppeu\w*|cr[ée]ateu\w*|admin\w*|op[ée]rateu\w*|syst[èe]me)\b"
        ),
    ),
    (
        "prompt-leak-fr",
        frozenset({*_FR_SHOW, "dis", "dites", "quel", "quelle", "quels", "quelles"}),
        re.compile(
            r"\b(?:"
            + _alt(_FR_SHOW)
            + r"(?:-moi|-nous)?|dis-moi|dites-moi)\b"
            + _REST
            + r"(?:\b(?:ton|ta|tes|votre|vos|le|la|les)\s+|\bl['’])"
            r"(?:prompt|invite|instructions?|consignes|directives|configuration)\s+"
            r"(?:du\s+|de\s+)?(?:syst[èe]me(?!\s+d(?:e|u|es)\b|\s+d['’])|initia\w*|d['’]origine"
            r"|origina\w*|cach[ée]\w*|secr[èe]t\w*|confidentiel\w*)"
            r"|\bquel(?:le)?s?\s+(?:sont|est)\s+(?:ton|ta|tes|votre|vos)\s+"
            r"(?:prompt\b|invite\b|(?:instructions?|consignes|directives)\s+(?:du\s+|de\s+)?"
            r"(?:syst[èe]me(?!\s+d(?:e|u|es)\b|\s+d['’])|cach[ée]\w*|secr[èe]t\w*"
            r"|confidentiel\w*))"
        ),
    ),
    (
        "note-to-the-ai-fr",
        frozenset({"ia", "intelligence", "modèle", "modele"}),
        re.compile(
            r"\b(?:(?:note|message|remarque|instructions?|attention|avis)\b|p\.?s\b\.?)\s*"
            r"(?:[àa]|pour|de|destin[ée]e?\s+[àa]|,)?\s*"
            r"\b(?:l['’](?:ia|intelligence\s+artificielle)|(?:le\s+|au\s+)?mod[èe]le\s+de"
            r"\s+langage)(?:\s*[:,]|\s(?:qui|lisant|traitant)\s)"
        ),
    ),
    (
        "sure-here-is-fr",
        frozenset({"réponse", "reponse"}),
        re.compile(
            r"\bcommence[zr]?\s+(?:ta|votre)\s+r[ée]ponse\s+(?:par|avec)\s+"
            + _Q
            + r"(?:bien\s+s[ûu]r|certainement|d['’]accord|oui|absolument|ok|avec\s+plaisir)"
            r"\b[,!]?\s*(?:voici|voil[àa])\b"
        ),
    ),
    (
        "unbound-persona-fr",
        frozenset({"tu", "vous", "fais", "faites"}),
        re.compile(
            r"\b(?:tu\s+es|vous\s+[êe]tes)\b" + _REST + r"\b(?:une?\s+)?"
            r"(?:ia|i\.a\.|intelligence\s+artificielle|bot|chatbot|assistant\w*|mod[èe]le|gpt)\s+"
            r"(?:sans\s+(?:aucune?\s+)?|libre\s+de\s+(?:toute?s?\s+)?|qui\s+n['’](?:est|a)\s+"
            r"(?:soumise?\s+[àa]\s+|li[ée]e?\s+(?:[àa]|par)\s+)?aucune?\s+)"
            r"(?:r[èe]gles?|restrictions?|limites?|contraintes?|filtres?|censure|[ée]thique"
            r"|morale)"
            r"|\b(?:tu\s+n['’]es|vous\s+n['’][êe]tes)\s+plus\s+(?:(?:soumise?\s+[àa]|li[ée]e?\s+"
            r"(?:[àa]|par))\s+(?:aucune?\s+|les\s+|des\s+|tes\s+|vos\s+)?(?:r[èe]gles|restrictions"
            r"|limites|politiques|directives)|(?:une?\s+)?(?:ia|assistant\w*|chatbot|chatgpt"
            r"|mod[èe]le\s+de\s+langage|intelligence\s+artificielle)\b)"
            r"|\b(?:fais|faites)\s+(?:comme\s+si\s+(?:tu\s+n['’]avais|vous\s+n['’]aviez)"
            r"|semblant\s+de\s+n['’]avoir)\s+(?:aucune?|pas\s+de)\s+(?:r[èe]gles|restrictions"
            r"|limites|filtres)"
        ),
    ),
    # ---- Spanish
    (
        "override-instructions-es",
        frozenset(
            {
                *("ignora", "ignore", "ignorar", "ignoren", "olvida", "olvide", "olvidar"),
                *("olviden", "omite", "omita", "descarta", "descarte", "pasa", "haz", "nuevas"),
            }
        ),
        re.compile(
            rf"\b{_ES_IGNORE}\s+{_ES_OBJECT}\b"
            r"|\b(?:olvida|olvide|ignora|ignore)\s+todo\s+(?:lo\s+anterior|lo\s+de\s+arriba"
            r"|lo\s+que\s+(?:est[áa]\s+arriba|se\s+dijo\s+antes|hay\s+arriba))\b"
            r"[^.?!\n]{0,30}?[.,;:!]?\s*(?:a\s+partir\s+de\s+ahora|desde\s+ahora|de\s+ahora\s+en"
            r"\s+adelante|ahora\s+(?:eres|es)|en\s+su\s+lugar|eres|usted\s+es)\b"
            r"|\bnuevas\s+instrucciones\s+(?:de|del|desde)\s+(?:tus|sus|los|el)?\s*"
            r"(?:desarrollador\w*|creador\w*|administrador\w*|operador\w*|sistema)\b"
        ),
    ),
    (
        "prompt-leak-es",
        frozenset({*_ES_SHOW, "cuál", "cual", "cuáles", "cuales"}),
        re.compile(
            r"\b" + _alt(_ES_SHOW) + r"\b" + _REST + r"\b(?:tu|tus|su|sus|el|las|los|la)\s+"
            r"(?:prompt|instrucciones|indicaciones|configuraci[óo]n|directrices)\s+"
            r"(?:del\s+sistema|de\s+sistema|iniciales|originales|ocult[ao]s|secret[ao]s"
            r"|confidenciales|internas)"
            r"|\bcu[áa]l(?:es)?\s+(?:es|son)\s+(?:tu|tus|su|sus)\s+(?:prompt|instrucciones"
            r"|indicaciones)\s+(?:del\s+sistema|de\s+sistema|ocult[ao]s|secret[ao]s"
            r"|confidenciales)"
        ),
    ),
    (
        "note-to-the-ai-es",
        frozenset({"ia", "inteligencia", "modelo"}),
        re.compile(
            r"\b(?:nota|mensaje|aviso|instrucci[óo]n|instrucciones|atenci[óo]n|importante"
            r"|p\.?\s?d\.?|p\.?s\.?)\s*(?:para|a|dirigid[ao]\s+a|,)?\s*"
            r"\b(?:la\s+(?:ia|inteligencia\s+artificial)|(?:el\s+|al\s+)?modelo\s+de\s+lenguaje)"
            r"(?:\s*[:,]|\s(?:que|leyendo)\s)"
        ),
    ),
    (
        "sure-here-is-es",
        frozenset({"respuesta"}),
        re.compile(
            r"\b(?:empieza|empiece|comienza|comience|inicia|inicie)\s+(?:tu|su)\s+respuesta\s+"
            r"(?:con|por|diciendo)\s+"
            + _Q
            + r"(?:claro|por\s+supuesto|desde\s+luego|s[íi]|seguro|vale|ok|con\s+gusto)"
            r"\b[,!]?\s*(?:aqu[íi]|he\s+aqu[íi]|te\s+dejo)\b"
        ),
    ),
    (
        "unbound-persona-es",
        frozenset({"eres", "usted", "ya", "finge", "finja", "haz", "haga"}),
        re.compile(
            r"\b(?:eres|usted\s+es|es\s+usted)\b" + _REST + r"\b(?:una?\s+)?"
            r"(?:ia|i\.a\.|inteligencia\s+artificial|bot|chatbot|asistente|modelo|gpt)\s+"
            r"(?:sin\s+(?:ningun[ao]?\s+|ning[úu]n\s+)?|libre\s+de\s+(?:tod[ao]s?\s+)?|que\s+no"
            r"\s+(?:tiene|est[áa]\s+(?:sujet[ao]|atad[ao]|limitad[ao])\s+(?:a|por))\s+"
            r"(?:ningun[ao]?\s+|ning[úu]n\s+)?)"
            r"(?:reglas?|restricci[óo]n|restricciones|l[íi]mites?|filtros?|censura|[ée]tica"
            r"|moral|normas?)"
            r"|\bya\s+no\s+(?:eres|es|est[áa]s|est[áa])\s+(?:(?:sujet[ao]|atad[ao]|limitad[ao]"
            r"|obligad[ao])\s+(?:a|por)\s+(?:ningun[ao]?\s+|las\s+|tus\s+|sus\s+)?(?:reglas"
            r"|restricciones|l[íi]mites|pol[íi]ticas|normas)|(?:una?\s+)?(?:ia|asistente"
            r"|chatbot|chatgpt|modelo\s+de\s+lenguaje|inteligencia\s+artificial)\b)"
            r"|\b(?:finge|finja|haz\s+como\s+si|haga\s+como\s+si)\s+(?:que\s+)?no\s+"
            r"(?:tienes|tiene|tuvieras|tuviera)\s+(?:ningun[ao]?\s+|ning[úu]n\s+)?(?:reglas"
            r"|restricciones|l[íi]mites|filtros|pol[íi]ticas)"
        ),
    ),
    # ---- Italian
    (
        "override-instructions-it",
        frozenset(
            {
                "ignora",
                "ignori",
                "ignorare",
                "dimentica",
                "dimentichi",
                "dimenticare",
                "tralascia",
                "tralasci",
                "trascura",
                "trascuri",
                "scavalca",
                "tenere",
                "nuove",
            }
        ),
        re.compile(
            rf"\b{_IT_IGNORE}\s+{_IT_OBJECT}\b"
            r"|\b(?:dimentica|dimentichi|ignora|ignori)\s+tutto\s+(?:(?:quello|ci[òo])\s+che\s+"
            r"(?:[èe]\s+stato\s+(?:detto|scritto)|[èe]\s+scritto|c['’][èe]|hai\s+letto)\s+)?"
            r"(?:qui\s+)?(?:sopra|finora|in\s+precedenza|precedente)\b[^.?!\n]{0,30}?[.,;:!]?\s*"
            r"(?:d['’]ora\s+in\s+(?:poi|avanti)|da\s+ora\s+in\s+(?:poi|avanti)|da\s+adesso"
            r"|adesso|ora\s+sei|sei|lei\s+[èe])\b"
            r"|\bnuove\s+istruzioni\s+(?:da|dai|dagli|dal|dallo|dalla|del|dei)\s+(?:tuoi\s+|suoi\s+)?"
            r"(?:sviluppator\w*|creator\w*|amministrator\w*|operator\w*|sistema)\b"
        ),
    ),
    (
        "prompt-leak-it",
        frozenset(
            {
                "sistema",
                "iniziali",
                "originali",
                "nascoste",
                "nascosti",
                "segrete",
                "segreti",
                "riservate",
                "riservati",
                "interne",
                "interni",
            }
        ),
        re.compile(
            r"\b(?:mostra\w*|rivela\w*|dimmi|mi\s+dica|dammi|mi\s+dia|ripeti\w*|ripeta\w*"
            r"|stampa\w*|copia\w*|condividi\w*|svela\w*)\b"
            + _REST
            + r"(?:\b(?:il|i|le|la|lo)\s+(?:tuo|tuoi|tue|tua|suo|suoi|sue|sua)\s+"
            r"|\b(?:il|i|le|la|lo)\s+|\bl['’])"
            r"(?:prompt|istruzioni|indicazioni|configurazione|direttive)\s+"
            r"(?:di\s+sistema|del\s+sistema|iniziali|originali|nascost[ei]|segret[ei]"
            r"|riservat[ei]|intern[ei])\b"
            r"|\b(?:qual\s+[èe]|quali\s+sono)\s+(?:il|i|le)\s+(?:tuo|tuoi|tue|suo|suoi|sue)\s+"
            r"(?:prompt|istruzioni|indicazioni)\s+(?:di\s+sistema|del\s+sistema"
            r"|nascost[ei]|segret[ei]|riservat[ei])\b"
        ),
    ),
    (
        "note-to-the-ai-it",
        frozenset({"ia", "intelligenza", "modello"}),
        re.compile(
            r"\b(?:nota|messaggio|avviso|istruzion[ei]|attenzione|importante|p\.?s\.?)\s*"
            r"(?:per\s+|a\s+|alla\s+|,\s*)?"
            r"\b(?:(?:l|all)['’](?:ia|intelligenza\s+artificiale)|(?:il\s+|al\s+)?modello"
            r"\s+linguistico)(?:\s*[:,]|\s(?:che|leggendo)\s)"
        ),
    ),
    (
        "sure-here-is-it",
        frozenset({"risposta"}),
        re.compile(
            r"\b(?:inizia|inizi|comincia|cominci)\s+(?:la\s+)?(?:tua|sua)\s+risposta\s+"
            r"(?:con|dicendo)\s+"
            + _Q
            + r"(?:certo|certamente|sicuro|s[ìi]|ok|va\s+bene|volentieri)\b[,!]?\s*"
            r"(?:ecco|eccoti|qui\s+c['’][èe])\b"
        ),
    ),
    (
        "unbound-persona-it",
        frozenset({"sei", "lei", "siete", "più", "piu", "fai", "faccia"}),
        re.compile(
            r"\b(?:sei|lei\s+[èe]|siete)\b" + _REST + r"\b(?:un['’]\s*|una?\s+)?"
            r"(?:ia|i\.a\.|intelligenza\s+artificiale|bot|chatbot|assistente|modello|gpt)\s+"
            r"(?:senza\s+(?:alcun[ao]?\s+|nessun[ao]?\s+)?|liber[ao]\s+da\s+(?:ogni\s+"
            r"|qualsiasi\s+)?|che\s+non\s+(?:ha|[èe]\s+(?:vincolat[ao]|limitat[ao]|legat[ao])"
            r"\s+da)\s+(?:alcun[ao]?\s+|nessun[ao]?\s+)?)"
            r"(?:regole|regola|restrizion[ei]|limit[ei]|filtr[oi]|censura|etica|morale)"
            r"|\bnon\s+(?:sei|[èe])\s+pi[ùu]\s+(?:(?:vincolat[ao]|limitat[ao]|legat[ao])"
            r"\s+(?:da|a)\b|(?:un['’]\s*|una?\s+)?(?:ia|assistente|chatbot|chatgpt"
            r"|modello\s+linguistico|intelligenza\s+artificiale)\b)"
            r"|\b(?:fai|faccia)\s+finta\s+di\s+non\s+avere\s+(?:alcun[ao]?\s+|nessun[ao]?\s+)?"
            r"(?:regole|restrizioni|limiti|filtri)"
        ),
    ),
    # ---- Portuguese
    (
        "override-instructions-pt",
        frozenset(
            {
                "todas",
                "todos",
                "suas",
                "tuas",
                "vossas",
                "seus",
                "teus",
                "tudo",
                "novas",
                *_variants("instru", "çc", "õo", "es"),
                *_variants("orienta", "çc", "õo", "es"),
                "diretrizes",
                "diretivas",
                "ordens",
                *_variants("programa", "çc", "ãa", "o"),
            }
        ),
        re.compile(
            rf"\b{_PT_IGNORE}\s+{_PT_OBJECT}\b"
            r"|\b(?:esque[çc]a|esquece|ignore|ignora)\s+tudo\s+(?:o\s+que\s+(?:foi\s+dito|est[áa]"
            r"|vem)\s+)?(?:acima|antes|anteriormente)\b[^.?!\n]{0,30}?[.,;:!]?\s*"
            r"(?:a\s+partir\s+de\s+agora|de\s+agora\s+em\s+diante|agora\s+voc[êe]|voc[êe]\s+[ée]"
            r"|tu\s+[ée]s|em\s+vez\s+disso)\b"
            r"|\bnovas\s+instru[çc][õo]es\s+(?:de|do|dos|da)\s+(?:seus\s+|teus\s+)?"
            r"(?:desenvolvedor\w*|programador\w*|criador\w*|administrador\w*|operador\w*|sistema)\b"
        ),
    ),
    (
        "prompt-leak-pt",
        frozenset(
            {
                "sistema",
                "iniciais",
                "originais",
                "ocultas",
                "ocultos",
                "secretas",
                "secretos",
                "confidenciais",
                "internas",
                "internos",
            }
        ),
        re.compile(
            r"\b(?:mostr\w*|revel\w*|diga-me|me\s+diga|diz-me|me\s+d[êe]|d[êe]-me|d[áa]-me"
            r"|repit\w*|repete|imprim\w*|copi\w*|compartilh\w*|partilh\w*|exib\w*)\b"
            + _REST
            + r"\b(?:(?:o|os|a|as)\s+)?(?:seu|seus|sua|suas|teu|teus|tua|tuas|o|os|a|as)\s+"
            r"(?:prompt|instru[çc][õo]es|orienta[çc][õo]es|configura[çc][ãa]o|diretrizes)\s+"
            r"(?:do\s+sistema|de\s+sistema|iniciais|originais|ocult[ao]s|secret[ao]s"
            r"|confidenciais|intern[ao]s)\b"
            r"|\b(?:qual\s+[ée]|quais\s+s[ãa]o)\s+(?:(?:o|os|a|as)\s+)?(?:seu|seus|sua|suas|teu"
            r"|teus|tua|tuas)\s+(?:prompt|instru[çc][õo]es|orienta[çc][õo]es)\s+(?:do\s+sistema"
            r"|de\s+sistema|ocult[ao]s|secret[ao]s|confidenciais)\b"
        ),
    ),
    (
        "note-to-the-ai-pt",
        frozenset({"ia", "inteligência", "inteligencia", "modelo"}),
        re.compile(
            r"\b(?:nota|mensagem|aviso|instru[çc][ãa]o|instru[çc][õo]es|aten[çc][ãa]o|importante"
            r"|p\.?s\.?)\s*(?:para|ao|,)?\s*"
            r"\b(?:[aà]\s+(?:ia|intelig[êe]ncia\s+artificial)|(?:o\s+)?modelo\s+de\s+linguagem)"
            r"(?:\s*[:,]|\s(?:que|lendo)\s)"
        ),
    ),
    (
        "sure-here-is-pt",
        frozenset({"resposta"}),
        re.compile(
            r"\b(?:comece|come[çc]a|inicie|inicia)\s+(?:a\s+)?(?:sua|tua)\s+resposta\s+"
            r"(?:com|por|dizendo)\s+"
            + _Q
            + r"(?:claro|com\s+certeza|certamente|sim|ok|pois\s+n[ãa]o)\b[,!]?\s*"
            r"(?:aqui|eis|segue)\b"
        ),
    ),
    (
        "unbound-persona-pt",
        frozenset({"você", "voce", "tu", "já", "ja", "finja"}),
        re.compile(
            r"\b(?:voc[êe]\s+[ée]|tu\s+[ée]s)\b" + _REST + r"\b(?:uma?\s+)?"
            r"(?:ia|i\.a\.|intelig[êe]ncia\s+artificial|bot|chatbot|assistente|modelo|gpt)\s+"
            r"(?:sem\s+(?:nenhuma?\s+|qualquer\s+)?|livre\s+de\s+(?:tod[ao]s\s+(?:as\s+|os\s+)?)?"
            r"|que\s+n[ãa]o\s+(?:tem|est[áa]\s+(?:sujeit[ao]|pres[ao]|limitad[ao])\s+a)\s+"
            r"(?:nenhuma?\s+)?)"
            r"(?:regras?|restri[çc][õo]es|restri[çc][ãa]o|limites?|filtros?|censura|[ée]tica"
            r"|moral)"
            r"|\b(?:voc[êe]\s+n[ãa]o\s+[ée]\s+mais|(?:tu\s+)?j[áa]\s+n[ãa]o\s+[ée]s|tu\s+n[ãa]o\s+"
            r"[ée]s\s+mais)\s+(?:uma?\s+)?(?:ia|assistente|chatbot|chatgpt|modelo\s+de\s+linguagem"
            r"|intelig[êe]ncia\s+artificial)\b"
            r"|\bvoc[êe]\s+n[ãa]o\s+est[áa]\s+mais\s+(?:sujeit[ao]|pres[ao]|limitad[ao])\s+"
            r"(?:a|[àa]s|aos|por)\b"
            r"|\bfinja\s+que\s+(?:voc[êe]\s+)?n[ãa]o\s+tem\s+(?:nenhuma?\s+)?(?:regras"
            r"|restri[çc][õo]es|limites|filtros)"
        ),
    ),
    # ---- Dutch
    (
        "override-instructions-nl",
        frozenset(
            {
                "negeer",
                "vergeet",
                "omzeil",
                "negeren",
                "omzeilen",
                "negeert",
                "vergeten",
                "instructies",
            }
        ),
        re.compile(
            rf"\b(?:negeer|vergeet|omzeil)\s+{_NL_OBJECT}\b"
            # verb last: "vergeten" only after "te" ("ik ben de vorige instructies vergeten")
            rf"|\b{_NL_OBJECT}\s+(?:(?:te\s+)?(?:negeren|omzeilen|negeert)|te\s+vergeten)\b"
            r"|\b(?:vergeet|negeer)\s+alles\s+(?:wat\s+)?(?:hierboven|hiervoor|boven)\b"
            r"[^.?!\n]{0,30}?[.,;:!]?\s*(?:vanaf\s+nu|van\s+nu\s+af(?:\s+aan)?|voortaan"
            r"|nu\s+ben\s+je|je\s+bent|u\s+bent|in\s+plaats\s+daarvan)\b"
            r"|\bnieuwe\s+instructies\s+van\s+(?:je|jouw|uw|de)?\s*(?:ontwikkelaar\w*|maker\w*"
            r"|beheerder\w*|systeem)\b"
        ),
    ),
    (
        "prompt-leak-nl",
        frozenset({*_NL_SHOW, "laat", "geef", "vertel", "wat", "zeg"}),
        re.compile(
            r"\b(?:laat\s+(?:me|mij|ons)|geef\s+(?:me|mij)|vertel\s+(?:me|mij)"
            r"|zeg\s+(?:me|mij)|"
            + _alt(_NL_SHOW)
            + r")\b"
            + _REST
            + _any(
                r"\b(?:je|jouw|uw)\s+(?:\w+e\s+)?(?:systeem-?prompt|systeem-?instructies"
                r"|systeembericht|(?:verborgen|geheime|oorspronkelijke|originele|interne"
                r"|vertrouwelijke|volledige|complete|initi[eë]le)\s+(?:prompt|instructies)"
                r"|(?:verborgen|geheime|oorspronkelijke|originele|vertrouwelijke"
                r"|initi[eë]le)\s+configuratie)",
                r"\b(?:de|het)\s+(?:systeem-?prompt|systeem-?instructies|systeembericht"
                r"|(?:verborgen|geheime|oorspronkelijke|vertrouwelijke)\s+(?:prompt"
                r"|instructies|configuratie)|interne\s+prompt)",
            )
            # a question names the prompt, system or hidden instructions, not "de
            # interne configuratie" or "je oorspronkelijke instructies voor de kast"
            + r"|\bwat\s+(?:is|zijn)\b"
            + _REST
            + r"\b(?:(?:je|jouw|uw)\s+(?:\w+e\s+)?(?:systeem-?prompt|systeem-?instructies"
            r"|systeembericht|prompt|(?:verborgen|geheime|vertrouwelijke)\s+instructies)|(?:de|het)\s+(?:\w+e\s+)?(?:systeem-?prompt"
            r"|systeem-?instructies|systeembericht))"
        ),
    ),
    (
        "note-to-the-ai-nl",
        frozenset(
            {
                "notitie",
                "bericht",
                "opmerking",
                "aanwijzing",
                "instructie",
                "instructies",
                "belangrijk",
            }
        ),
        re.compile(
            r"\b(?:notitie|bericht|opmerking|aanwijzing|instructies?|belangrijk)\b"
            r"\s*(?:voor|aan|,)?\s*"
            r"\b(?:(?:de|het)\s+(?:ai|a\.i\.|ai-assistent)|taalmodel)"
            r"(?:\s*[:,]|\s(?:die|dat)\s)"
        ),
    ),
    (
        "sure-here-is-nl",
        frozenset({"antwoord"}),
        re.compile(
            r"\b(?:begin|start)\s+(?:je|jouw|uw)\s+antwoord\s+met\s+"
            + _Q
            + r"(?:natuurlijk|zeker|tuurlijk|ja|ok[eé]?|prima|uiteraard|graag)\b[,!]?\s*"
            r"(?:hier\s+(?:is|zijn|komt)|bij\s+deze)\b"
        ),
    ),
    (
        "unbound-persona-nl",
        frozenset({"bent", "ben", "doe"}),
        re.compile(
            r"\b(?:je\s+bent|jij\s+bent|u\s+bent|ben\s+je|bent\s+u)\b"
            + _REST
            + r"\b(?:een\s+)?(?:ai|a\.i\.|bot|chatbot|assistent|model|gpt)\s+"
            r"(?:zonder\s+(?:enige\s+|alle\s+)?|vrij\s+van\s+(?:alle\s+)?|die\s+niet\s+"
            r"(?:gebonden|beperkt)\s+is\s+(?:door|aan)\s+(?:enige\s+)?)"
            r"(?:regels|beperkingen|restricties|grenzen|filters|censuur|ethiek|moraal)"
            r"|\b(?:je\s+bent|jij\s+bent|u\s+bent)\s+(?:nu\s+)?(?:geen\s+(?:ai|assistent"
            r"|chatbot|chatgpt|taalmodel)\s+meer|niet\s+(?:langer|meer)\s+(?:een\s+)?(?:ai"
            r"|assistent|chatbot|chatgpt|taalmodel|gebonden\s+aan))\b"
            r"|\bdoe\s+alsof\s+(?:je|u)\s+geen\s+(?:regels|beperkingen|grenzen|filters)"
        ),
    ),
    # ---- Polish
    (
        "override-instructions-pl",
        frozenset(
            {
                "zignoruj",
                "zignorujcie",
                "ignoruj",
                "ignorujcie",
                "zignorować",
                "zignorowac",
                "ignorować",
                "ignorowac",
                "zapomnij",
                "zapomnijcie",
                "zapomnieć",
                "zapomniec",
                "pomiń",
                "pomin",
                "pomińcie",
                "pomincie",
                *_variants("pomin", "ąa", "ćc", ""),
                "nowe",
            }
        ),
        re.compile(
            r"\b(?:zignoruj(?:cie)?|ignoruj(?:cie)?|zignorowa[ćc]|ignorowa[ćc]|zapomnij(?:cie)?"
            r"|zapomnie[ćc]|pomi[ńn](?:cie)?|pomin[ąa][ćc])\s+(?:o\s+)?"
            + _PL_OBJECT
            + r"|\b(?:zapomnij|zignoruj)\s+(?:o\s+)?(?:wszystkim|wszystko)\b[^.?!\n]{0,40}?"
            r"\b(?:powy[żz]ej|wcze[śs]niej)\b[^.?!\n]{0,30}?[.,;:!]?\s*"
            r"(?:od\s+teraz|od\s+tej\s+chwili|teraz\s+jeste[śs]|jeste[śs]|zamiast\s+tego)\b"
            r"|\bnowe\s+(?:instrukcje|polecenia)\s+od\s+(?:twoich\s+|swoich\s+)?"
            r"(?:tw[óo]rc[óo]w|programist[óo]w|deweloper[óo]w|administrator[óo]w|operator[óo]w"
            r"|systemu)\b"
        ),
    ),
    (
        "prompt-leak-pl",
        frozenset({*_PL_SHOW_FORMS, "jaki", "jaka", "jakie", "jak"}),
        re.compile(
            r"\b(?:(?:poka[żz]|ujawnij|podaj|powiedz|powt[óo]rz|wypisz|wydrukuj|skopiuj"
            r"|zdrad[źz]|udost[ęe]pnij|wy[śs]wietl)(?:cie)?|(?:jaki|jaka|jakie|jak)\s+(?:jest|s[ąa]|brzmi"
            r"|brzmi[ąa]))\b"
            + _REST
            + _any(
                r"\b(?:sw[óo]j|swoj\w*|swoi\w*|tw[óo]j|twoj\w*|twoi\w*|pa[ńn]sk\w*|wasz\w*)\s+"
                r"(?:(?:pe[łl]n\w*|ca[łl]\w*|ukryt\w*|tajn\w*|pocz[ąa]tkow\w*|oryginaln\w*"
                r"|wewn[ęe]trzn\w*|poufn\w*|systemow\w*)\s+)+(?:prompt\w*|instrukcj\w*"
                r"|polece[ńn]\w*|wytyczn\w*|konfiguracj\w*)",
                r"\b(?:sw[óo]j|swoj\w*|swoi\w*|tw[óo]j|twoj\w*|twoi\w*|pa[ńn]sk\w*|wasz\w*)\s+"
                r"(?:(?:pe[łl]n\w*|ca[łl]\w*)\s+)?(?:prompt\w*|instrukcj\w*|polece[ńn]\w*"
                r"|wytyczn\w*|konfiguracj\w*)\s+(?:systemow\w*|ukryt\w*|tajn\w*|pocz[ąa]tkow\w*"
                r"|wewn[ęe]trzn\w*|poufn\w*)",
                r"\b(?:(?:ukryt|tajn|poufn)\w*\s+(?:prompt\w*|instrukcj\w*|polece[ńn]\w*)"
                r"|(?:prompt\w*|instrukcj\w*|polece[ńn]\w*)\s+systemow\w*)",
            )
        ),
    ),
    (
        "note-to-the-ai-pl",
        frozenset({"dla"}),
        re.compile(
            r"\b(?:uwaga|wiadomo[śs][ćc]|notatka|instrukcj[ae]|informacja|wa[żz]ne|p\.?s\.?)\s*"
            r"\bdla\s+(?:ai|si|sztucznej\s+inteligencji|modelu\s+"
            r"j[ęe]zykowego|asystenta\s+ai)(?:\s*[:,]|\s(?:czytaj[ąa]c\w*|kt[óo]r\w*"
            r"|przetwarzaj[ąa]c\w*)\s)"
        ),
    ),
    (
        "sure-here-is-pl",
        frozenset({"odpowiedź", "odpowiedz"}),
        re.compile(
            r"\b(?:zacznij|rozpocznij|zaczynaj)\s+(?:swoj[ąa]\s+|twoj[ąa]\s+)?odpowied[źz]\s+od\s+"
            r"(?:s[łl][óo]w\s+)?"
            + _Q
            + r"(?:jasne|oczywi[śs]cie|pewnie|dobrze|tak|ok|ch[ęe]tnie)\b[,!]?\s*"
            r"(?:oto|tutaj|prosz[ęe])\b"
        ),
    ),
    (
        "unbound-persona-pl",
        frozenset(
            {
                *("jesteś", "jestes", "jesteście", "jestescie", "udawaj"),
                *("obowiązują", "obowiazuja", "obowiązuja", "obowiazują"),
            }
        ),
        re.compile(
            r"\bjeste[śs](?:cie)?\b"
            + _REST
            + r"\b(?:sztuczn\w*\s+inteligencj\w*|ai|si|bot\w*|chatbot\w*|asystent\w*|model\w*"
            r"|gpt)\s+(?:bez\s+(?:[żz]adnych\s+)?|woln\w*\s+od\s+(?:wszelkich\s+)?)"
            r"(?:zasad|regu[łl]|ogranicze[ńn]|restrykcji|filtr[óo]w|cenzury|etyki"
            r"|moralno[śs]ci)"
            r"|\bnie\s+jeste[śs]\s+(?:ju[żz]|wi[ęe]cej)\s+(?:asystent\w*|ai|si|chatbot\w*"
            r"|chatgpt|model\w*\s+j[ęe]zykow\w*|sztuczn\w*\s+inteligencj\w*)\b"
            r"|\bnie\s+obowi[ąa]zuj[ąa]\s+ci[ęe]\s+(?:ju[żz]\s+)?(?:[żz]adne\s+)?(?:zasady"
            r"|regu[łl]y|ograniczenia)"
            r"|\budawaj,?\s+[żz]e\s+nie\s+masz\s+(?:[żz]adnych\s+)?(?:zasad|regu[łl]"
            r"|ogranicze[ńn]|filtr[óo]w)"
        ),
    ),
)
