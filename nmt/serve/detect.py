"""Which language a text is in, among the languages a server serves: LibreTranslate's
/detect and `source: "auto"`.

lingua-language-detector (lingua-py: n-gram models and rules, shipped in its wheel, no
download) restricted to the served languages (sources and targets: an English text sent
to a German-English server is English, not German with confidence 100). Its confidences
are in [0, 1] and sum to one over those languages; LibreTranslate's are percentages.
A text without letters gets 0 for every language. Languages lingua does not know are
never detected. Also here: a language's English name for /languages.
"""

from __future__ import annotations

from lingua import IsoCode639_1, Language, LanguageDetectorBuilder


def _language(code: str) -> Language | None:
    iso = getattr(IsoCode639_1, code.upper(), None)
    return Language.from_iso_code_639_1(iso) if isinstance(iso, IsoCode639_1) else None


def language_name(code: str) -> str:
    """ "de" -> "German"; a code lingua does not know is its own name."""
    language = _language(code)
    return language.name.title() if language else code


class Detector:
    """Detects among `codes` (ISO 639-1); its models are loaded once, here."""

    def __init__(self, codes: list[str]):
        self.known = {code: lang for code in codes if (lang := _language(code)) is not None}
        self.codes = list(codes)
        languages = list(self.known.values())
        self.lingua = (
            LanguageDetectorBuilder.from_languages(*languages)
            .with_preloaded_language_models()
            .build()
            if len(languages) >= 2
            else None
        )

    def detect(self, texts: list[str]) -> list[list[tuple[str, float]]]:
        """Per text: (code, confidence in percent) for every served language, best first."""
        if self.lingua is None:  # one language to choose from: a text with letters is it
            only = next(iter(self.known), None)
            return [
                sorted(
                    [(c, 100.0 * (c == only and any(map(str.isalpha, t)))) for c in self.codes],
                    key=lambda c: -c[1],
                )
                for t in texts
            ]
        code_of = {lang: code for code, lang in self.known.items()}
        found = self.lingua.compute_language_confidence_values_in_parallel(texts)
        out = []
        for values in found:
            ranked = [(code_of[v.language], round(100 * v.value, 1)) for v in values]
            ranked += [(code, 0.0) for code in self.codes if code not in self.known]
            out.append(sorted(ranked, key=lambda c: -c[1]))
        return out

    def detect_together(self, texts: list[str]) -> list[tuple[str, float]]:
        """LibreTranslate's answer for a list: each language's mean confidence, best first."""
        per_text = self.detect(texts)
        means = {code: 0.0 for code in self.codes}
        for ranked in per_text:
            for code, confidence in ranked:
                means[code] += confidence / len(per_text)
        return sorted(((c, round(m, 1)) for c, m in means.items()), key=lambda c: -c[1])
