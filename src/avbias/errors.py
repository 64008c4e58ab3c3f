"""Errors that carry a message meant for the user: the CLI prints them without a traceback."""


class AvbiasError(Exception):
    """Base class: the message names the file or parameter at fault and the next step."""


class ParamsError(AvbiasError):
    """A parameter file or value is invalid."""


class DataError(AvbiasError):
    """Input data is missing, malformed or fails verification."""


class SourceUnreachableError(DataError):
    """A download source cannot be reached or refuses access (DNS, connection, TLS, proxy, permission):
    retrying file by file will not help; the message names the host and the ways forward."""
