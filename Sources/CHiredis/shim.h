#ifndef TOLLGATE_CHIREDIS_SHIM_H
#define TOLLGATE_CHIREDIS_SHIM_H

// hiredis 0.14 (Debian libhiredis-dev). Swift cannot import variadic functions or
// function-like macros, so what Tollgate needs of them is wrapped here.
#include <hiredis/hiredis.h>
#include <hiredis/read.h>

/// The reader's error string, or NULL (wraps the field access that hiredis documents as a macro).
static inline const char *CHiredis_readerErrorString(redisReader *reader) {
    return reader->err ? reader->errstr : NULL;
}

/// Whether the reader is in an error state.
static inline int CHiredis_readerHasError(redisReader *reader) {
    return reader->err != 0;
}

#endif
