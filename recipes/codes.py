"""The codes recipes can run: the registry of :mod:`matdx.codes.registry`, where each code's
own module declares its entry (recipes, elements, program, input generator, template)."""

from matdx.codes.registry import CODES, CodeInfo, UnsupportedCode, check_code, code_info

__all__ = ["CODES", "CodeInfo", "UnsupportedCode", "check_code", "code_info"]
