/* All helpers are static inline in include/vio_atomics.h; this file only gives
 * the target a translation unit. */
#include "vio_atomics.h"
