#include "bptt/options.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace bptt {

nlohmann::json ParseOptionText(OptionKind kind, std::string_view flag, const std::string& text) {
  const std::string name = "--" + std::string(flag);
  switch (kind) {
    case OptionKind::kInt: {
      errno = 0;
      char* end = nullptr;
      if (!text.empty() && text[0] != '-') {
        const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (errno == 0 && end != text.c_str() && *end == '\0') return nlohmann::json(static_cast<uint64_t>(v));
      } else {
        const long long v = std::strtoll(text.c_str(), &end, 10);
        if (errno == 0 && end != text.c_str() && *end == '\0') return nlohmann::json(static_cast<int64_t>(v));
      }
      throw Error(name + " must be an integer, got '" + text + "'");
    }
    case OptionKind::kNumber: {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(text.c_str(), &end);
      if (errno != 0 || end == text.c_str() || *end != '\0' || !std::isfinite(v))
        throw Error(name + " must be a number, got '" + text + "'");
      return nlohmann::json(v);
    }
    case OptionKind::kSwitch: return nlohmann::json(true);
    case OptionKind::kSwitchOff: return nlohmann::json(false);
    case OptionKind::kTexts: return nlohmann::json(std::vector<std::string>{text});
    case OptionKind::kText: break;
  }
  return nlohmann::json(text);
}

std::string OptionText(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string out;
    for (const auto& v : value) {
      if (!out.empty()) out += ' ';
      out += OptionText(v);
    }
    return out;
  }
  if (value.is_number_float()) {
    std::ostringstream out;
    out << value.get<double>();
    return out.str();
  }
  return value.dump();
}

std::string OptionKeyword(std::string_view flag) {
  std::string keyword(flag);
  std::replace(keyword.begin(), keyword.end(), '-', '_');
  return keyword;
}

void CheckThreads(int64_t threads, int min) {
  if (threads < min || threads > kMaxThreads)
    throw Error("--threads must be in [" + std::to_string(min) + ", " + std::to_string(kMaxThreads) + "]" +
                (min == 0 ? " (0 = chosen for you)" : "") + ", got " + std::to_string(threads));
}

nlohmann::json::json_pointer OptionPointer(std::string_view key) {
  std::string path;
  path.reserve(key.size() + 1);
  path += '/';
  for (const char ch : key) path += ch == '.' ? '/' : ch;
  return nlohmann::json::json_pointer(path);
}

std::vector<std::string> LeafKeys(const nlohmann::json& json) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : json.items()) {
    if (value.is_object() && !value.empty()) {
      for (const std::string& inner : LeafKeys(value)) keys.push_back(key + "." + inner);
    } else {
      keys.push_back(key);
    }
  }
  return keys;
}

}  // namespace bptt
