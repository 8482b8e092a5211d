#pragma once
/// \file
/// The library version.

/// Major version of cac.
#define CAC_VERSION_MAJOR 0
/// Minor version of cac.
#define CAC_VERSION_MINOR 1
/// Patch version of cac.
#define CAC_VERSION_PATCH 0
