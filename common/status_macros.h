// Small status helpers that Debian's abseil (20220623) does not ship.
#ifndef OMPQ_COMMON_STATUS_MACROS_H_
#define OMPQ_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define OMPQ_CONCAT_INNER_(a, b) a##b
#define OMPQ_CONCAT_(a, b) OMPQ_CONCAT_INNER_(a, b)

/// Returns the status from the enclosing function when `expr` is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status _ompq_status = (expr);      \
    if (!_ompq_status.ok()) return _ompq_status; \
  } while (0)

/// `ASSIGN_OR_RETURN(auto x, StatusOrExpr());` unwraps a StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  OMPQ_ASSIGN_OR_RETURN_IMPL_(OMPQ_CONCAT_(_ompq_statusor_, __LINE__), lhs, expr)

#define OMPQ_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // OMPQ_COMMON_STATUS_MACROS_H_
