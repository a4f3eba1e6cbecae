#pragma once
// Declaration shim, see ../../README.md. ProcessGroupGloo.hpp needs nothing from this header.
