// cac::io::read_checkpoint / read_state_dict / write_state_dict against fixtures made by
// tests/fixtures/io/make_io_fixtures.py with python3-torch 1.13 (expected values: the bytes
// Python saw, in <name>.expected.json).

#include "io/io_test_support.hpp"

#include <unistd.h>

using namespace io_test;

TEST_CASE("every fixture loads bit-exactly", "[io][read]") {
  for (const std::string name : {"ordered_dict", "mmcv_nested", "timm_model", "dtypes", "views"}) {
    SECTION(name) {
      const auto state_dict = cac::io::read_state_dict(fixture(name + ".pth"), cac::io::ReadOptions().warn(false));
      check_expected(state_dict, read_json(fixture(name + ".expected.json")));
    }
  }
}

TEST_CASE("the same archive loads from memory", "[io][read]") {
  const std::string bytes = read_bytes(fixture("views.pth"));
  const auto checkpoint = cac::io::read_checkpoint(bytes.data(), bytes.size(), "views-in-memory");
  check_expected(checkpoint.state_dict(), read_json(fixture("views.expected.json")));
}

TEST_CASE("the objects around the state dict are readable", "[io][read]") {
  const auto checkpoint = cac::io::read_checkpoint(fixture("mmcv_nested.pth"));
  const cac::io::Value* root = checkpoint.root();
  REQUIRE(root->is_dict());
  const cac::io::Value* meta = root->find("meta");
  REQUIRE(meta != nullptr);
  REQUIRE(meta->is_dict());

  SECTION("plain Python values") {
    CHECK(meta->find("mmcv_version")->text == "1.7.0");
    CHECK(meta->find("iter")->integer == 160000);
    CHECK(meta->find("negative")->integer == -123456789012);
    CHECK(meta->find("lr")->floating == 0.01);
    CHECK(meta->find("seed")->kind == cac::io::ValueKind::None);
    const auto* classes = meta->find("CLASSES");
    REQUIRE(classes->kind == cac::io::ValueKind::Tuple);
    REQUIRE(classes->items.size() == 2);
    CHECK(classes->items[1]->text == "building");
    CHECK(meta->find("flags")->kind == cac::io::ValueKind::Set);
    CHECK(meta->find("raw")->kind == cac::io::ValueKind::Bytes);
    CHECK(meta->find("raw")->text == std::string("\x00\xff"
                                                 "bytes",
                                                 7));
    CHECK(meta->find("big")->kind == cac::io::ValueKind::Object);  // 2**100 does not fit 64 bits
    CHECK(meta->find("big")->text == "builtins.int");
    REQUIRE(meta->find("big")->items.size() == 1);  // its bytes: 2**100 = 0x10 << (8 * 12)
    CHECK(meta->find("big")->items[0]->text == std::string(12, '\0') + "\x10");
  }
  SECTION("unknown objects are opaque") {
    CHECK(meta->find("object")->kind == cac::io::ValueKind::Object);
    CHECK(meta->find("object")->text == "__main__.Opaque");
    CHECK(meta->find("numpy_scalar")->kind == cac::io::ValueKind::Object);
    const auto& unknown = checkpoint.document.unknown_globals();
    CHECK(std::find(unknown.begin(), unknown.end(), "fractions.Fraction") != unknown.end());
  }
  SECTION("the optimizer state is there too") {
    const auto* optimizer = root->find("optimizer");
    REQUIRE(optimizer != nullptr);
    const auto* state = optimizer->find("state");
    REQUIRE(state != nullptr);
    REQUIRE(!state->entries.empty());
    CHECK(state->entries[0].first->kind == cac::io::ValueKind::Int);  // {0: {'momentum_buffer': ...}}
    CHECK(state->entries[0].second->find("momentum_buffer")->is_tensor());
  }
  SECTION("the OrderedDict's _metadata is kept aside, not as entries") {
    const auto* state_dict = root->find("state_dict");
    REQUIRE(state_dict->state != nullptr);
    CHECK(state_dict->state->find("_metadata") != nullptr);
    CHECK(state_dict->entries.size() == 10);
  }
  SECTION("repr is bounded") { CHECK(meta->repr().size() < 2000); }
}

TEST_CASE("state dict entry selection", "[io][read]") {
  SECTION("timm's {'model': ...}") { CHECK(cac::io::read_state_dict(fixture("timm_model.pth")).size() == 10); }
  SECTION("an explicit entry") {
    const auto sd = cac::io::read_state_dict(fixture("mmcv_nested.pth"), cac::io::ReadOptions().entry("state_dict"));
    CHECK(sd.count("bn.running_var") == 1);
  }
  SECTION("an entry that is not there") {
    const auto message =
        error_of([] { cac::io::read_state_dict(fixture("mmcv_nested.pth"), cac::io::ReadOptions().entry("ema")); });
    CHECK_THAT(message, Catch::Contains("cac::io::read_state_dict") && Catch::Contains("mmcv_nested.pth") &&
                            Catch::Contains("'ema'"));
  }
  SECTION("non-tensor entries are skipped") {
    // The optimizer's top level {'state': ..., 'param_groups': ...} has no tensors at all.
    const auto sd =
        cac::io::read_state_dict(fixture("mmcv_nested.pth"), cac::io::ReadOptions().entry("optimizer").warn(false));
    CHECK(sd.empty());
  }
}

TEST_CASE("writer: C++ -> file -> C++ and Python, bit-exact", "[io][write]") {
  TempDir dir;
  for (const std::string name : {"dtypes", "views", "ordered_dict"}) {
    SECTION(name) {
      const auto original = cac::io::read_state_dict(fixture(name + ".pth"), cac::io::ReadOptions().warn(false));
      const std::string path = dir.file(name + "_cpp.pth");
      cac::io::write_state_dict(original, path);
      CHECK(dir.temporaries().empty());
      const auto expected = read_json(fixture(name + ".expected.json"));
      check_expected(cac::io::read_state_dict(path), expected);
      if (!python_torch_available()) {
        WARN("skipped the Python half: /usr/bin/python3 with torch is not available");
      } else {
        const std::string command = "/usr/bin/python3 " + fixture("make_io_fixtures.py") + " --check " + path + " " +
                                    fixture(name + ".expected.json") + " >/dev/null";
        CHECK(std::system(command.c_str()) == 0);
      }
    }
  }
}

TEST_CASE("writer: an empty dict, a CPU copy of views, errors", "[io][write]") {
  TempDir dir;
  SECTION("empty") {
    cac::io::write_state_dict({}, dir.file("empty.pth"));
    CHECK(cac::io::read_state_dict(dir.file("empty.pth")).empty());
  }
  SECTION("undefined tensor") {
    cac::io::StateDict sd{{"w", at::Tensor()}};
    CHECK_THAT(error_of([&] { cac::io::write_state_dict(sd, dir.file("bad.pth")); }),
               Catch::Contains("cac::io::write_state_dict: expected defined tensors but 'w' is undefined"));
    CHECK_FALSE(std::filesystem::exists(dir.file("bad.pth")));
    CHECK(dir.temporaries().empty());
  }
  SECTION("unwritable directory") {
    CHECK_THAT(error_of([&] {
                 cac::io::write_state_dict({{"w", torch::ones(2)}}, dir.file("no/such/dir/x.pth"));
               }),
               Catch::Contains("cannot open"));
  }
}

TEST_CASE("unreadable files give clear errors", "[io][errors]") {
  TempDir dir;
  SECTION("missing file") {
    CHECK_THAT(error_of([&] { cac::io::read_checkpoint(dir.file("nope.pth")); }),
               Catch::Contains("nope.pth does not exist"));
  }
  SECTION("empty file") {
    write_bytes(dir.file("empty.pth"), "");
    CHECK_THAT(error_of([&] { cac::io::read_checkpoint(dir.file("empty.pth")); }),
               Catch::Contains(
                   "empty.pth: expected a torch.save file (zip archive or legacy format) but got a file of 0 bytes"));
  }
  SECTION("text file") {
    write_bytes(dir.file("text.pth"), "hello, this is not a checkpoint\n");
    CHECK_THAT(error_of([&] { cac::io::read_checkpoint(dir.file("text.pth")); }),
               Catch::Contains("text.pth: expected a torch.save file (a zip archive") && Catch::Contains("0x68"));
  }
  SECTION("legacy format: read, see test_legacy.cpp") {
    CHECK(cac::io::read_state_dict(fixture("legacy.pth")).size() == 13);
  }
  SECTION("every truncation") {
    const std::string bytes = read_bytes(fixture("ordered_dict.pth"));
    for (size_t n = 0; n < bytes.size(); n += 7) {
      INFO("first " << n << " bytes");
      const auto message = error_of([&] { cac::io::read_checkpoint(bytes.data(), n, "cut.pth"); });
      CHECK_THAT(message, Catch::Contains("cac::io::read_checkpoint: cut.pth"));
    }
  }
  SECTION("corrupted bytes: an error naming the file or the right values, never a crash") {
    const std::string original = read_bytes(fixture("views.pth"));
    const auto expected = read_json(fixture("views.expected.json"));
    size_t loaded = 0, rejected = 0;
    for (size_t at = 0; at < original.size(); at += 3) {
      std::string bytes = original;
      bytes[at] = static_cast<char>(bytes[at] ^ 0x5a);
      try {
        auto sd = cac::io::read_checkpoint(bytes.data(), bytes.size(), "flipped.pth")
                      .state_dict(cac::io::ReadOptions().warn(false));
        // A flip in padding, an unused field, a tensor's bytes or a size that stays inside its
        // storage: LibTorch's zip reader (like Python's torch.load) does not check CRCs, so such
        // files load; what matters is that every view stays inside its storage.
        ++loaded;
        for (const auto& [key, value] : sd) {
          CHECK(value.storage_offset() + (value.numel() ? 1 : 0) <=
                value.storage().nbytes() / value.element_size() + 1);
        }
      } catch (const c10::Error& e) {
        ++rejected;
        CHECK_THAT(e.msg(), Catch::Contains("flipped.pth"));
      }
    }
    CHECK(rejected > 0);
    CHECK(loaded + rejected > 100);
  }
  SECTION("a zip that is not a checkpoint") {
    // A valid PyTorch archive without data.pkl.
    std::ostringstream zip;
    {
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t size) {
        zip.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
        return size;
      });
      writer.writeRecord("other.txt", "x", 1);
      writer.writeEndOfFile();
    }
    const std::string bytes = zip.str();
    CHECK_THAT(error_of([&] { cac::io::read_checkpoint(bytes.data(), bytes.size(), "other.zip"); }),
               Catch::Contains("other.zip: expected a 'data.pkl' record"));
  }
}

TEST_CASE("is_torchscript_archive tells LibTorch archives from torch.save files", "[io][read]") {
  TempDir dir;
  // LibTorch's torch::save writes a TorchScript-style archive (constants.pkl, like torch.jit.save);
  // read_checkpoint refuses it and names it.
  torch::save(torch::arange(3), dir.file("libtorch.pt"));
  CHECK(cac::io::is_torchscript_archive(dir.file("libtorch.pt")));
  CHECK_THAT(error_of([&] { cac::io::read_checkpoint(dir.file("libtorch.pt")); }),
             Catch::Contains("libtorch.pt: expected a torch.save checkpoint but got a TorchScript archive"));
  // torch.save files, zip (Python's and ours) and legacy, are not.
  CHECK_FALSE(cac::io::is_torchscript_archive(fixture("ordered_dict.pth")));
  CHECK_FALSE(cac::io::is_torchscript_archive(fixture("legacy.pth")));
  cac::io::write_state_dict({{"w", torch::ones(2)}}, dir.file("ours.pth"));
  CHECK_FALSE(cac::io::is_torchscript_archive(dir.file("ours.pth")));
  // Anything else: false, never an exception.
  write_bytes(dir.file("text.pt"), "hello");
  write_bytes(dir.file("broken.pt"), std::string("PK\x03\x04", 4) + "not a zip at all");
  CHECK_FALSE(cac::io::is_torchscript_archive(dir.file("text.pt")));
  CHECK_FALSE(cac::io::is_torchscript_archive(dir.file("broken.pt")));
  CHECK_FALSE(cac::io::is_torchscript_archive(dir.file("missing.pt")));
  CHECK_FALSE(cac::io::is_torchscript_archive(dir.path.string()));
}

TEST_CASE("pickle interpreter: malformed programs", "[io][pickle]") {
  auto run = [](const std::string& program) {
    cac::io::Document document;
    cac::io::unpickle(program.data(), program.size(), "test.pkl", document);
    return document.root()->repr();
  };
  CHECK(run(std::string("\x80\x02}q\x00(X\x01\x00\x00\x00"
                        "aK\x05u.",
                        16)) == "{'a': 5}");
  CHECK(run("(K\x01K\x02l.") == "[1, 2]");
  CHECK_THAT(error_of([&] { run("\x80\x02}"); }), Catch::Contains("test.pkl: truncated pickle"));
  CHECK_THAT(error_of([&] { run(std::string("X\xff\xff\xff\x7f", 5)); }), Catch::Contains("truncated pickle"));
  CHECK_THAT(error_of([&] { run("s."); }), Catch::Contains("stack underflow"));
  CHECK_THAT(error_of([&] { run(std::string("h\x03.", 3)); }), Catch::Contains("memo key 3 was never stored"));
  CHECK_THAT(error_of([&] { run("u."); }), Catch::Contains("mark stack is empty"));
  CHECK_THAT(error_of([&] { run("\xff."); }), Catch::Contains("unsupported pickle opcode 0xff"));
  CHECK_THAT(error_of([&] { run("(tQ."); }), Catch::Contains("expected no persistent ids"));
  SECTION("self-referencing list: no leak, no recursion") {
    CHECK(run(std::string("]q\x00h\x00"
                          "a.",
                          7))
              .size() < 100);
  }
}
