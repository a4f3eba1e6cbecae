// TensorBoard event files without TensorFlow or protobuf: the few protobuf fields needed
// (Event.wall_time=1 double, Event.step=2 int64, Event.file_version=3 string, Event.summary=5;
// Summary.value=1; Summary.Value.tag=1 string, Summary.Value.simple_value=2 float) are encoded by
// hand, each inside TFRecord framing: u64 length, u32 masked CRC32C of the length, payload,
// u32 masked CRC32C of the payload.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "clipper/core/error.hpp"
#include "clipper/train/metrics.hpp"

namespace clipper::train {
namespace {

std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}

std::uint32_t masked_crc(const void* data, std::size_t size) {
  const std::uint32_t c = crc32c(data, size);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

void put_varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <class T>
void put_fixed(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));  // x86-64 and aarch64 are little-endian, as protobuf wants
  out.append(b, sizeof(T));
}

void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, (static_cast<std::uint64_t>(field) << 3) | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string event_header(std::int64_t step) {
  std::string e;
  const double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  put_varint(e, (1 << 3) | 1);
  put_fixed(e, now);
  put_varint(e, (2 << 3) | 0);
  put_varint(e, static_cast<std::uint64_t>(step));
  return e;
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t size) {
  static const auto table = make_crc_table();
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = 0xffffffffu;
  for (std::size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

TensorBoardSink::TensorBoardSink(const std::string& dir) {
  std::filesystem::create_directories(dir);
  char host[256] = "localhost";
  ::gethostname(host, sizeof host - 1);
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  path_ = (std::filesystem::path(dir) / ("events.out.tfevents." + std::to_string(secs) + "." +
                                         host + "." + std::to_string(::getpid())))
              .string();
  out_.open(path_, std::ios::binary);
  if (!out_) throw core::Error("cannot create TensorBoard event file '" + path_ + "'");
  std::string first = event_header(0);
  put_bytes(first, 3, "brain.Event:2");
  write_record(first);
  out_.flush();
}

void TensorBoardSink::write(std::int64_t step, const Scalars& scalars) {
  std::string summary;
  for (const auto& [name, value] : scalars) {
    std::string v;
    put_bytes(v, 1, name);
    put_varint(v, (2 << 3) | 5);
    put_fixed(v, static_cast<float>(value));
    put_bytes(summary, 1, v);
  }
  std::string event = event_header(step);
  put_bytes(event, 5, summary);
  write_record(event);
}

void TensorBoardSink::flush() {
  out_.flush();
}

void TensorBoardSink::write_record(const std::string& payload) {
  std::string rec;
  const std::uint64_t len = payload.size();
  put_fixed(rec, len);
  put_fixed(rec, masked_crc(&len, sizeof len));
  rec += payload;
  put_fixed(rec, masked_crc(payload.data(), payload.size()));
  out_.write(rec.data(), static_cast<std::streamsize>(rec.size()));
}

}  // namespace clipper::train
