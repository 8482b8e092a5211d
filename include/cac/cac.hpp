#pragma once
/// \file
/// Umbrella header of cac, the context-aware classifier (Tian et al., "Learning Context-aware
/// Classifier for Semantic Segmentation", AAAI 2023) for LibTorch.
///
/// ```
/// #include <cac/cac.hpp>
/// ```

#include <cac/autocast.hpp>
#include <cac/context_aware_classifier.hpp>
#include <cac/context_aware_head.hpp>
#include <cac/context_aware_loss.hpp>
#include <cac/entropy_aware_kl.hpp>
#include <cac/functional.hpp>
#include <cac/options.hpp>
#include <cac/outputs.hpp>
#include <cac/version.hpp>
