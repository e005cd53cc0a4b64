// Everything is in include/tollgate_cpu.h; this file gives the target something to compile.
#include "tollgate_cpu.h"
