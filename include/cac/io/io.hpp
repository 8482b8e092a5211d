#pragma once
/// \file
/// Umbrella header of cac's checkpoint I/O: reading and writing PyTorch `.pth` files and loading
/// them into modules by key. Not included by `<cac/cac.hpp>` (it needs LibTorch's serialization
/// headers); see docs/checkpoints.md.
///
/// ```
/// #include <cac/io/io.hpp>
/// auto weights = cac::io::read_state_dict("fcn_m-v2-d8_512x512_160k_ade20k.pth");
/// auto report = cac::io::load_state_dict(*model, weights);
/// ```

#include <cac/io/checkpoint.hpp>
#include <cac/io/load_state_dict.hpp>
#include <cac/io/pickle.hpp>
