// Everything is in include/tollgate_cycles.h; this file gives the target something to compile.
#include "tollgate_cycles.h"
