from ._native import (
    Arena as Arena,
    ArenaReader as ArenaReader,
    ArenaWriter as ArenaWriter,
    Blob as Blob,
    ClosedError as ClosedError,
    CorruptError as CorruptError,
    LaggedError as LaggedError,
    PeerGoneError as PeerGoneError,
    Reader as Reader,
    Region as Region,
    RoleTakenError as RoleTakenError,
    ShmArenaError as ShmArenaError,
    ShutdownError as ShutdownError,
    Subscriber as Subscriber,
    Unit as Unit,
    UnitWriter as UnitWriter,
    Writer as Writer,
)

__all__: list[str]
