#pragma once
// Declaration shim, see ../README.md.
#include "gloo/context.h"
