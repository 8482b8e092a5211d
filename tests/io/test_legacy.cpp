// cac::io::read_checkpoint on the legacy torch.save format (PyTorch < 1.6 and
// `_use_new_zipfile_serialization=False`), against fixtures written by python3-torch 1.13 with
// tests/fixtures/io/make_legacy_fixtures.py: each legacy_<name>.pth next to its zip twin
// legacy_<name>.zip.pth and legacy_<name>.expected.json (the bytes Python saw).

#include "io/io_test_support.hpp"

using namespace io_test;

namespace {

/// The byte offset after the first `pickles` pickles of the legacy stream `bytes` (magic number,
/// protocol version, system info, main pickle, storage key list; 5: the storage section).
size_t pickles_offset(const std::string& bytes, int pickles) {
  size_t pos = 0;
  for (int i = 0; i < pickles; ++i) {
    cac::io::Document document;
    pos += cac::io::unpickle(bytes.data() + pos, bytes.size() - pos, "scan", document, [](const cac::io::Value& pid) {
      return at::empty({pid.items[4]->integer},
                       at::TensorOptions().dtype(cac::io::detail::storage_type_dtype(pid.items[1]->text)));
    });
  }
  return pos;
}

size_t storage_section_offset(const std::string& bytes) { return pickles_offset(bytes, 5); }

/// `bytes` with the first occurrence of `from` (which must be there) replaced by `to`.
std::string replace_once(std::string bytes, const std::string& from, const std::string& to) {
  const size_t at = bytes.find(from);
  REQUIRE(at != std::string::npos);
  return bytes.replace(at, from.size(), to);
}

/// Checks that `legacy` and `zip` hold the same tensors: keys, dtypes, sizes, strides, offsets,
/// bytes, and the same pattern of storage sharing.
void check_same(const cac::io::StateDict& legacy, const cac::io::StateDict& zip) {
  REQUIRE(legacy.size() == zip.size());
  std::map<const c10::StorageImpl*, const c10::StorageImpl*> legacy_to_zip;
  for (const auto& [key, z] : zip) {
    INFO("tensor " << key);
    REQUIRE(legacy.count(key) == 1);
    const at::Tensor& l = legacy.at(key);
    CHECK(l.scalar_type() == z.scalar_type());
    CHECK(l.sizes() == z.sizes());
    CHECK(l.strides() == z.strides());
    CHECK(l.storage_offset() == z.storage_offset());
    CHECK(l.storage().nbytes() == z.storage().nbytes());
    CHECK(hex_of(l) == hex_of(z));
    auto inserted = legacy_to_zip.emplace(l.storage().unsafeGetStorageImpl(), z.storage().unsafeGetStorageImpl());
    CHECK(inserted.first->second == z.storage().unsafeGetStorageImpl());
  }
  std::set<const c10::StorageImpl*> zip_storages;
  for (const auto& entry : legacy_to_zip) zip_storages.insert(entry.second);
  CHECK(zip_storages.size() == legacy_to_zip.size());  // one legacy storage per zip storage
}

}  // namespace

TEST_CASE("legacy files load like their zip twins, bit-exactly", "[io][legacy]") {
  for (const std::string name : {"legacy_tensors", "legacy_mmseg_cac"}) {
    SECTION(name) {
      const auto options = cac::io::ReadOptions().warn(false);
      const auto legacy = cac::io::read_state_dict(fixture(name + ".pth"), options);
      const auto zip = cac::io::read_state_dict(fixture(name + ".zip.pth"), options);
      check_same(legacy, zip);
      check_expected(legacy, read_json(fixture(name + ".expected.json")));
    }
  }
  SECTION("the older legacy.pth (make_io_fixtures.py) is dtypes.pth") {
    check_expected(cac::io::read_state_dict(fixture("legacy.pth")), read_json(fixture("dtypes.expected.json")));
  }
}

TEST_CASE("legacy tensors: values checked by hand", "[io][legacy]") {
  const auto sd = cac::io::read_state_dict(fixture("legacy_tensors.pth"));
  // hand = arange(6).view(2, 3) * 0.25 - 1
  const at::Tensor hand = sd.at("hand");
  REQUIRE(hand.scalar_type() == at::kFloat);
  REQUIRE(hand.sizes() == c10::IntArrayRef({2, 3}));
  const float expected_hand[6] = {-1.0f, -0.75f, -0.5f, -0.25f, 0.0f, 0.25f};
  for (int i = 0; i < 6; ++i) CHECK(hand.view(-1)[i].item<float>() == expected_hand[i]);
  // i64 = [[-2**62, -1, 0], [1, 2**40, 2**62]]
  CHECK(sd.at("i64")[0][0].item<int64_t>() == -(int64_t{1} << 62));
  CHECK(sd.at("i64")[1][1].item<int64_t>() == (int64_t{1} << 40));
  CHECK(sd.at("i8")[0].item<int8_t>() == -128);
  CHECK(sd.at("u8")[2].item<uint8_t>() == 255);
  CHECK(sd.at("bool")[1].item<bool>() == false);
  CHECK(sd.at("i16")[0].item<int16_t>() == -300);
  CHECK(sd.at("scalar").dim() == 0);
  CHECK(sd.at("scalar").item<float>() == 3.25f);
  CHECK(sd.at("empty").sizes() == c10::IntArrayRef({0, 4}));
  // base = arange(24) * 0.5 - 3; strided = base.view(4, 6)[1:, ::2]: element (1, 2) is base[12 + 4]
  CHECK(sd.at("strided").strides() == c10::IntArrayRef({6, 2}));
  CHECK(sd.at("strided").storage_offset() == 6);
  CHECK(sd.at("strided")[1][2].item<float>() == 16 * 0.5f - 3);
  CHECK(sd.at("transposed").strides() == c10::IntArrayRef({1, 6}));
  CHECK(sd.at("offset_slice").storage_offset() == 5);
  CHECK(sd.at("offset_slice")[0].item<float>() == 5 * 0.5f - 3);
  // long_view = arange(10)[2:8:2] = [2, 4, 6]
  CHECK(sd.at("long_view").storage_offset() == 2);
  CHECK(sd.at("long_view").stride(0) == 2);
  CHECK(sd.at("long_view")[2].item<int64_t>() == 6);

  SECTION("views share memory with their base, tied weights are one tensor's storage") {
    CHECK(sd.at("matrix").storage().unsafeGetStorageImpl() == sd.at("base").storage().unsafeGetStorageImpl());
    CHECK(sd.at("strided").storage().unsafeGetStorageImpl() == sd.at("base").storage().unsafeGetStorageImpl());
    CHECK(sd.at("tied_a").storage().unsafeGetStorageImpl() == sd.at("tied_b").storage().unsafeGetStorageImpl());
    CHECK(sd.at("f32").storage().unsafeGetStorageImpl() != sd.at("base").storage().unsafeGetStorageImpl());
    sd.at("base").view(-1)[16].fill_(100.0f);  // a write through the base shows in the view
    CHECK(sd.at("strided")[1][2].item<float>() == 100.0f);
  }
}

TEST_CASE("legacy mmseg checkpoint with CAC: meta, state dict, BN buffers", "[io][legacy]") {
  const auto checkpoint = cac::io::read_checkpoint(fixture("legacy_mmseg_cac.pth"));
  const cac::io::Value* meta = checkpoint.root()->find("meta");
  REQUIRE(meta != nullptr);
  CHECK(meta->find("mmseg_version")->text == "0.11.0+e8cc322");
  CHECK(meta->find("iter")->integer == 80000);
  REQUIRE(meta->find("CLASSES")->items.size() == 5);
  CHECK(meta->find("CLASSES")->items[2]->text == "sky");
  const auto sd = checkpoint.state_dict();
  CHECK(sd.size() == 26);
  for (const char* key : {"backbone.conv1.weight", "decode_head.conv_seg.weight", "decode_head.proj.0.weight",
                          "decode_head.apd_proj.0.weight", "decode_head.apd_proj.2.bias"}) {
    CHECK(sd.count(key) == 1);
  }
  CHECK(sd.at("decode_head.proj.0.weight").sizes() == c10::IntArrayRef({4, 16}));  // Linear(2 * 8, 8 / 2)
  CHECK(sd.at("decode_head.conv_seg.weight").sizes() == c10::IntArrayRef({5, 8, 1, 1}));
  const at::Tensor tracked = sd.at("backbone.bn1.num_batches_tracked");
  CHECK(tracked.scalar_type() == at::kLong);
  CHECK(tracked.dim() == 0);
  CHECK(tracked.item<int64_t>() == 80000);
  CHECK(sd.at("decode_head.convs.0.bn.num_batches_tracked").item<int64_t>() == 80000);
}

TEST_CASE("legacy storage views and CUDA storage types", "[io][legacy]") {
  // Written by make_legacy_fixtures.py's transcription of _legacy_save (PyTorch >= 1.0 no
  // longer writes storage views) and read back by real torch.load to make the expected JSON.
  const auto sd = cac::io::read_state_dict(fixture("legacy_storage_views.pth"));
  check_expected(sd, read_json(fixture("legacy_storage_views.expected.json")));
  // a = arange(12) * 1.5 - 4 (torch.cuda.FloatStorage, 'cuda:0'); view '201' = a[4:10];
  // a_view = view[1:5] as [[5, 7], [6, 8]].
  const at::Tensor a_view = sd.at("a_view");
  CHECK(a_view.device().is_cpu());
  CHECK(a_view[0][1].item<float>() == 7 * 1.5f - 4);
  CHECK(a_view[1][0].item<float>() == 6 * 1.5f - 4);
  CHECK(a_view.storage().nbytes() == 6 * 4);
  // The view's storage is a window on the root's memory, like torch.load's storage slice.
  const auto* root = static_cast<const char*>(sd.at("a_full").storage().data());
  CHECK(static_cast<const char*>(a_view.storage().data()) == root + 4 * 4);
  CHECK(a_view.storage().unsafeGetStorageImpl() == sd.at("a_view_again").storage().unsafeGetStorageImpl());
  CHECK(sd.at("c_view").scalar_type() == at::kHalf);
  CHECK(sd.at("c_view")[1].item<float>() == 65504.0f);
  CHECK(sd.at("b")[1][0].item<int64_t>() == -(int64_t{1} << 40));
}

TEST_CASE("legacy whole-module save", "[io][legacy]") {
  // torch.save(Tiny()) where Tiny has weight = [[1, -2], [0.5, 4]] and a buffer steps = 3.
  const auto checkpoint = cac::io::read_checkpoint(fixture("legacy_module.pth"));
  const cac::io::Value* root = checkpoint.root();
  REQUIRE(root->kind == cac::io::ValueKind::Object);
  CHECK(root->text == "__main__.Tiny");
  REQUIRE(root->state != nullptr);
  const cac::io::Value* parameters = root->state->find("_parameters");
  REQUIRE(parameters != nullptr);
  const cac::io::Value* weight = parameters->find("weight");
  REQUIRE(weight != nullptr);
  REQUIRE(weight->is_tensor());
  CHECK(weight->tensor[1][0].item<float>() == 0.5f);
  CHECK(root->state->find("_buffers")->find("steps")->tensor.item<int64_t>() == 3);
}

TEST_CASE("legacy files: the same bytes load from memory", "[io][legacy]") {
  const std::string bytes = read_bytes(fixture("legacy_tensors.pth"));
  const auto checkpoint = cac::io::read_checkpoint(bytes.data(), bytes.size(), "legacy-in-memory");
  check_expected(checkpoint.state_dict(), read_json(fixture("legacy_tensors.expected.json")));
}

TEST_CASE("legacy files: a main pickle larger than the first read window (1 MiB)", "[io][legacy]") {
  // legacy_tensors.pth with a 3 MiB string pushed and popped (BINUNICODE ... POP) at the start of
  // its main pickle: the reader must grow its window over the pickle (4 MiB, then the file) and
  // still find the storages after it.
  const std::string original = read_bytes(fixture("legacy_tensors.pth"));
  const size_t main_pickle = pickles_offset(original, 3);
  const uint32_t n = 3u << 20;
  std::string big = "X";
  for (int i = 0; i < 4; ++i) big.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  big += std::string(n, 'a') + "0";
  const std::string bytes = original.substr(0, main_pickle) + big + original.substr(main_pickle);
  const auto checkpoint = cac::io::read_checkpoint(bytes.data(), bytes.size(), "big.pth");
  check_expected(checkpoint.state_dict(), read_json(fixture("legacy_tensors.expected.json")));
  SECTION("and a truncation inside it is reported as one") {
    CHECK_THAT(error_of([&] { cac::io::read_checkpoint(bytes.data(), main_pickle + (2u << 20), "big.pth"); }),
               Catch::Contains("big.pth (legacy torch.save main pickle at byte " + std::to_string(main_pickle) +
                               "): truncated pickle"));
  }
}

TEST_CASE("legacy files: truncated or corrupted files give clear errors", "[io][legacy][errors]") {
  const std::string original = read_bytes(fixture("legacy_tensors.pth"));
  const size_t section = storage_section_offset(original);
  REQUIRE(section > 100);
  REQUIRE(section < original.size());
  auto read = [](const std::string& bytes) {
    return error_of([&] { cac::io::read_checkpoint(bytes.data(), bytes.size(), "old.pth"); });
  };

  SECTION("every truncation names the file") {
    for (size_t n = 0; n < original.size(); n += 5) {
      INFO("first " << n << " bytes");
      CHECK_THAT(read(original.substr(0, n)), Catch::StartsWith("cac::io::read_checkpoint: old.pth"));
    }
  }
  SECTION("truncated in a pickle: which pickle, where") {
    CHECK_THAT(read(original.substr(0, 40)), Catch::Contains("old.pth (legacy torch.save system info pickle at byte") &&
                                                 Catch::Contains("truncated pickle"));
    CHECK_THAT(
        read(original.substr(0, section - 3)),
        Catch::Contains("old.pth (legacy torch.save storage key list pickle") && Catch::Contains("truncated pickle"));
  }
  SECTION("truncated in the storage section") {
    // 18 storages: 13 single tensors (f32 ... hand), the base of the five float views, param,
    // the tied pair, half_view's and long_view's bases. They are stored in the order of their
    // keys sorted as strings, so "1 of 18" (6 floats) and "18 of 18" (16 bytes) are this file's.
    CHECK_THAT(read(original.substr(0, section)),
               Catch::Contains("old.pth: truncated storage section: expected the element count of storage '") &&
                   Catch::Contains("(1 of 18) at byte " + std::to_string(section)));
    CHECK_THAT(read(original.substr(0, section + 10)),
               Catch::Contains("old.pth: truncated storage section: expected") &&
                   Catch::Contains("(1 of 18) at byte " + std::to_string(section + 8) + " but only 2 are left"));
    CHECK_THAT(read(original.substr(0, original.size() - 1)),
               Catch::Contains("truncated storage section: expected 16 bytes of storage '") &&
                   Catch::Contains("(18 of 18) at byte 2981 but only 15 are left"));
  }
  SECTION("wrong element count") {
    std::string bytes = original;
    bytes[section] = static_cast<char>(bytes[section] + 1);
    CHECK_THAT(read(bytes),
               Catch::Contains("old.pth: storage '") &&
                   Catch::Contains("(1 of 18): expected 6 Float elements (as the main pickle says) but the "
                                   "storage section says 7"));
  }
  SECTION("unknown storage type") {
    CHECK_THAT(
        read(replace_once(original, "FloatStorage", "FlowtStorage")),
        Catch::Contains("old.pth: expected a storage type such as torch.FloatStorage but got torch.FlowtStorage"));
  }
  SECTION("bad magic number, protocol version") {
    std::string bytes = original;
    bytes[4] = static_cast<char>(bytes[4] ^ 1);  // a byte of the magic number
    CHECK_THAT(read(bytes),
               Catch::Contains("old.pth: expected a torch.save file") &&
                   Catch::Contains("but got a plain pickle file whose first object is <builtins.int object>"));
    CHECK_THAT(read(replace_once(original, std::string("M\xe9\x03", 3), std::string("M\xea\x03", 3))),
               Catch::Contains("old.pth: expected the legacy torch.save protocol version 1001 after the magic number "
                               "but got 1002"));
  }
  SECTION("big-endian writer") {
    const size_t at = original.find("little_endian");
    REQUIRE(at != std::string::npos);
    std::string bytes = original;
    const size_t flag = bytes.find('\x88', at);  // NEWTRUE
    REQUIRE(flag < at + 24);
    bytes[flag] = '\x89';  // NEWFALSE
    CHECK_THAT(read(bytes), Catch::Contains("old.pth: expected a file written on a little-endian machine but got one "
                                            "written on a big-endian machine"));
  }
  SECTION("a plain pickle file") {
    CHECK_THAT(read(std::string("\x80\x02K\x05.", 5)),
               Catch::Contains("old.pth: expected a torch.save file") &&
                   Catch::Contains("but got a plain pickle file whose first object is 5"));
  }
  SECTION("the tar form of PyTorch 0.1") {
    std::string tar(1024, '\0');
    tar.replace(0, 8, "storages");
    tar.replace(257, 5, "ustar");
    CHECK_THAT(read(tar), Catch::Contains("old.pth: expected a torch.save file (zip archive or legacy format) but got "
                                          "a tar archive") &&
                              Catch::Contains("_use_new_zipfile_serialization=True"));
  }
  SECTION("storage counts that cannot fit in the file: refused before allocating") {
    // The first storage's pid ('storage', <torch.FloatStorage>, key, 'cpu', 6, None): numel 6
    // (BININT1 K 6) becomes 2**28 (BININT J), 1 GiB of floats, in a 3000-byte file.
    std::string bytes = original;
    size_t at = bytes.find("cpu") + 3;
    if (bytes[at] == 'q') at += 2;  // BINPUT
    REQUIRE(bytes.substr(at, 2) == std::string("K\x06", 2));
    bytes.replace(at, 2, std::string("J\x00\x00\x00\x10", 5));
    CHECK_THAT(read(bytes),
               Catch::Contains("old.pth: storage ") &&
                   Catch::Contains(" of 268435456 Float elements (1073741824 bytes) cannot fit in the rest "
                                   "of a file of 3000 bytes"));
  }
  SECTION("corrupted bytes: an error naming the file or a load, never a crash") {
    size_t loaded = 0, rejected = 0;
    for (size_t at = 0; at < original.size(); at += 3) {
      std::string bytes = original;
      bytes[at] = static_cast<char>(bytes[at] ^ 0x5a);
      try {
        auto sd = cac::io::read_checkpoint(bytes.data(), bytes.size(), "flipped.pth")
                      .state_dict(cac::io::ReadOptions().warn(false));
        ++loaded;
        for (const auto& entry : sd) (void)hex_of(entry.second);
      } catch (const c10::Error& e) {
        ++rejected;
        CHECK_THAT(e.msg(), Catch::Contains("flipped.pth"));
      }
    }
    CHECK(rejected > 100);
    CHECK(loaded > 0);  // flips inside tensor bytes load, as in torch.load
  }
}
