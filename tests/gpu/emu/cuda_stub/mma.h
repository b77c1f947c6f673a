/* mma.h — stands in for the CUDA header under the emulator: everything is in emu.h. */
#include "emu.h"
