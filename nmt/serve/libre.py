"""LibreTranslate's API as its clients use it: POST /translate and /detect, GET /languages
and /frontend/settings (its file formats: `nmt.serve.files`), and /suggest answered as a
LibreTranslate server with suggestions off answers it.

Parameters come from the query string, a form or JSON (`nmt.serve.door`). `source: auto`
detects each text's language on its own (`nmt.serve.detect`; LibreTranslate detects a
list's languages together and translates every text from the winner): texts of several
languages are translated each from its own, and a text already in the target language
comes back as it is, as a LibreTranslate server does when source and target are equal.
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse, Response

from nmt.options import SearchOptions
from nmt.serve.batcher import Options
from nmt.serve.context import Call, Served
from nmt.serve.detect import language_name
from nmt.serve.door import RequestError
from nmt.serve.files import SUFFIXES
from nmt.serve.openapi import ALTERNATIVES


class LibreApi:
    def __init__(self, served: Served):
        self.served = served

    async def translate(self, call: Call) -> Response:
        params, served = call.params, self.served
        texts, single = params.texts("q")
        served.check_chars(texts, call.chars, "q")
        source, target = params.text("source").lower(), params.text("target").lower()
        fmt = params.get("format", "text")
        if fmt not in ("text", "html"):
            raise RequestError(f"'format' must be text or html, got {fmt!r}")
        alternatives = params.number(ALTERNATIVES) or 0  # an n-best list
        options = Options(fmt, SearchOptions(nbest=1 if fmt == "html" else 1 + alternatives))
        if source == "auto":
            detected = await self.detect_sources(texts, target)
            sources = [code for code, _ in detected]
        else:
            served.pair(source, target)
            sources, detected = [source] * len(texts), None
        best, others = await self._translate(texts, sources, target, options)
        answer = {"translatedText": best[0] if single else best}
        if alternatives:
            answer["alternatives"] = others[0] if single else others
        if detected:
            found = [{"confidence": c, "language": code} for code, c in detected]
            answer["detectedLanguage"] = found[0] if single else found
        return JSONResponse(answer)

    async def detect_sources(self, texts: list[str], target: str) -> list[tuple[str, float]]:
        """Each text's language (and confidence): the most likely served one; a text with
        no letters, the first source with a model into `target`."""
        served = self.served
        if target not in served.languages:
            raise RequestError(f"no model into {target}; served: {', '.join(served.pairs)}")
        ranked = await asyncio.to_thread(served.detector.detect, texts)
        into = [p.split("-")[0] for p in served.pairs if p.endswith(f"-{target}")]
        found = []
        for i, candidates in enumerate(ranked):
            code, confidence = candidates[0]
            if confidence == 0 and into:
                code = into[0]
            elif code != target and code not in into:
                which = "'q'" if len(texts) == 1 else f"'q' item {i}"
                raise RequestError(
                    f"{which} looks {language_name(code)} ({code}, confidence {confidence}): "
                    f"no model {code} -> {target}; served: {', '.join(served.pairs)}"
                )
            found.append((code, confidence))
        return found

    async def _translate(self, texts, sources, target, options) -> tuple[list, list]:
        """Each text from its source into `target` (batched per pair) -> the best
        translations and each one's alternatives (distinct, the best left out)."""
        groups: dict[str, list[int]] = {}
        for i, source in enumerate(sources):
            groups.setdefault(source, []).append(i)
        work = [
            self._one_pair(s, target, [texts[i] for i in ids], options) for s, ids in groups.items()
        ]
        best, others = [""] * len(texts), [[] for _ in texts]
        for source, found in zip(groups, await asyncio.gather(*work), strict=True):
            for i, result in zip(groups[source], found, strict=True):
                if options.format == "html" or source == target:
                    best[i] = result if isinstance(result, str) else result[0].text
                    continue
                best[i] = result[0].text
                others[i] = list(dict.fromkeys(h.text for h in result[1:] if h.text != best[i]))
        return best, others

    async def _one_pair(self, source: str, target: str, texts: list[str], options: Options):
        if source == target:  # already in the target language: as it is
            return texts
        return await self.served.batcher.translate(f"{source}-{target}", texts, options)

    async def detect(self, call: Call) -> Response:
        texts, single = call.params.texts("q")
        self.served.check_chars(texts, call.chars, "q")
        detector = self.served.detector
        if single:
            ranked = (await asyncio.to_thread(detector.detect, texts))[0]
        else:
            ranked = await asyncio.to_thread(detector.detect_together, texts)
        return JSONResponse([{"confidence": c, "language": code} for code, c in ranked])

    async def languages(self, call: Call) -> Response:
        pairs = self.served.pairs
        return JSONResponse(
            [
                {
                    "code": code,
                    "name": language_name(code),
                    "targets": sorted(p.split("-")[1] for p in pairs if p.startswith(f"{code}-")),
                }
                for code in self.served.languages
            ]
        )

    async def frontend_settings(self, call: Call) -> Response:
        target = self.served.pairs[0].split("-")[1]
        keys = self.served.keys is not None
        return JSONResponse(
            {
                "charLimit": self.served.limits.char_limit,
                "frontendTimeout": 500,
                "apiKeys": keys,
                "keyRequired": keys,
                "suggestions": False,
                "filesTranslation": True,
                "supportedFilesFormat": [f".{s}" for s in SUFFIXES],
                "language": {
                    "source": {"code": "auto", "name": "Auto Detect"},
                    "target": {"code": target, "name": language_name(target)},
                },
            }
        )

    async def suggest(self, call: Call) -> Response:
        raise RequestError("Suggestions are disabled on this server.", 403)
