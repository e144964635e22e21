""" Errors that name settings in the caller's terms

A library error that tells the user which setting to change names it as a Python caller knows it
(``num_classes``); ``train.py`` and ``validate.py`` show the same message with the flag instead
(``--num-classes``). ``setting_error`` builds such an exception of any class from a template whose
``{placeholders}`` are setting names; ``in_terms`` renders it with other names.
"""
from typing import Mapping, Type, TypeVar

__all__ = ['setting_error', 'in_terms', 'literal']

E = TypeVar('E', bound=BaseException)


class _Names(dict):
    """``str.format_map`` mapping: a setting's name in ``names``, else the setting's own (Python) name."""

    def __missing__(self, key: str) -> str:
        return key


def literal(value: object) -> str:
    """``str(value)`` with its braces escaped, to put a path or value into a ``setting_error`` template."""
    return str(value).replace('{', '{{').replace('}', '}}')


def setting_error(cls: Type[E], template: str) -> E:
    """ An exception of ``cls`` whose message is ``template`` with each ``{setting}`` written as its Python name.

    Literal braces are written ``{{`` / ``}}``.
    """
    error = cls(template.format_map(_Names()))
    error.settings_template = template
    return error


def in_terms(error: BaseException, names: Mapping[str, str]) -> str:
    """The message of ``error`` with each setting it names written as ``names[setting]`` (e.g. a flag)."""
    template = getattr(error, 'settings_template', None)
    return str(error) if template is None else template.format_map(_Names(names))
