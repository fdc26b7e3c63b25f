#include "CBlockSys.h"
