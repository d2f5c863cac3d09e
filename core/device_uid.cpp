// The device UID alphabet (see device_uid.hpp).
#include "core/device_uid.hpp"

namespace kiln {

bool is_device_uid(std::string_view uid) {
  if (uid.empty() || uid.size() > max_device_uid_length || uid == "." || uid == "..") return false;
  for (char c : uid) {
    bool letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
    bool digit = c >= '0' && c <= '9';
    if (!letter && !digit && c != '-' && c != '_' && c != '.' && c != ':') return false;
  }
  return true;
}

}  // namespace kiln
