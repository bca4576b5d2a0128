// DCMTK <-> dwb_attrs conversion and character-set handling for identifiers and responses.
#include "dwb_dcmconv.hh"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcelem.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcvrat.h"
#include "dcmtk/dcmdata/dcvr.h"

#include <cstring>

namespace {

const int kMaxDepth = 16;

bool valid_utf8(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (len == 0 || i + len > n) return false;
        for (size_t k = 1; k < len; k++)
            if (((unsigned char)s[i + k] >> 6) != 2) return false;
        i += len;
    }
    return true;
}

std::string latin1_to_utf8(const std::string &in) {
    std::string out;
    for (unsigned char c : in) {
        if (c < 0x80) {
            out += (char)c;
        } else {
            out += (char)(0xC0 | (c >> 6));
            out += (char)(0x80 | (c & 0x3F));
        }
    }
    return out;
}

bool is_binary_vr(DcmEVR vr) {
    switch (vr) {
    case EVR_OB: case EVR_OW: case EVR_OD: case EVR_OF: case EVR_OL: case EVR_OV: case EVR_UN:
        return true;
    default:
        return false;
    }
}

dwb_status tag_error(dwb_error *err, dwb_status st, const DcmTagKey &t, const char *what) {
    return dwb_error_set(err, st, "(%04X,%04X) %s: %s", t.getGroup(), t.getElement(),
                         DcmTag(t).getTagName(), what);
}

} // namespace

dwb_status dwb_item_to_attrs(DcmItem *item, dwb_attrs *out, int depth, dwb_error *err) {
    if (depth > kMaxDepth) return dwb_error_set(err, DWB_E_LIMIT, "sequences nested deeper than %d levels", kMaxDepth);
    // nextInContainer, not getElement(i)/getItem(k): those walk DCMTK's list from its head, quadratic in a peer's
    // element and item count.
    for (DcmObject *o = item->nextInContainer(nullptr); o; o = item->nextInContainer(o)) {
        DcmElement *el = static_cast<DcmElement *>(o);
        const DcmTag &tag = el->getTag();
        if (tag.getGroup() == 0x0000 || tag.getGroup() == 0x0002) continue; // command / meta: not data
        DcmEVR evr = el->ident() == EVR_SQ ? EVR_SQ : el->getVR();
        DcmVR vr(evr);
        const char *vrname = vr.getValidVRName();
        dwb_attr *at = dwb_attrs_put(out, DWB_TAG(tag.getGroup(), tag.getElement()), vrname);
        if (!at) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        if (evr == EVR_SQ) {
            DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
            for (DcmObject *k = sq->nextInContainer(nullptr); k; k = sq->nextInContainer(k)) {
                dwb_attrs *sub = dwb_attr_add_item(at);
                if (!sub) return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
                dwb_status st = dwb_item_to_attrs(static_cast<DcmItem *>(k), sub, depth + 1, err);
                if (st != DWB_OK) return st;
            }
            continue;
        }
        if (is_binary_vr(evr)) {
            Uint8 *bytes = nullptr;
            if (el->getLength() > 0 && el->getUint8Array(bytes).good() && bytes) {
                if (dwb_attr_set_bulk(at, bytes, el->getLength()) != DWB_OK)
                    return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
            }
            continue;
        }
        if (el->getLength() == 0) continue; // present but empty: universal matching / return key
        unsigned long vm = el->getVM();
        for (unsigned long v = 0; v < vm; v++) {
            OFString s;
            if (el->getOFString(s, v, OFTrue).bad()) return tag_error(err, DWB_E_PARSE, tag, "unreadable value");
            std::string val(s.c_str(), s.length());
            if (!valid_utf8(val.data(), val.size())) val = latin1_to_utf8(val);
            if (dwb_attr_add_value_n(at, val.data(), val.size()) != DWB_OK)
                return dwb_error_set(err, DWB_E_NOMEM, "out of memory");
        }
    }
    return DWB_OK;
}

dwb_status dwb_dcm_to_attrs(DcmDataset *ds, dwb_attrs *out, dwb_error *err) {
    OFString cs;
    ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs);
    if (!cs.empty() && cs != "ISO_IR 192") {
        OFCondition c = ds->convertToUTF8();
        if (c.bad())
            return dwb_error_set(err, DWB_E_UNSUPPORTED, "(0008,0005) SpecificCharacterSet '%s': cannot convert: %s",
                                 cs.c_str(), c.text());
    }
    return dwb_item_to_attrs(ds, out, 0, err);
}

dwb_status dwb_attrs_to_item(const dwb_attrs *a, DcmItem *item, dwb_error *err) {
    size_t n = dwb_attrs_count(a);
    for (size_t i = 0; i < n; i++) {
        const dwb_attr *at = dwb_attrs_at(a, i);
        DcmTagKey key(DWB_TAG_GROUP(at->tag), DWB_TAG_ELEMENT(at->tag));
        DcmTag tag(key);
        DcmVR vr(at->vr);
        if (vr.getEVR() != EVR_UNKNOWN && vr.getEVR() != EVR_UNKNOWN2B) tag.setVR(vr);
        if (tag.getEVR() == EVR_SQ || at->n_items > 0) {
            DcmSequenceOfItems *sq = new DcmSequenceOfItems(DcmTag(key, EVR_SQ));
            for (size_t k = 0; k < at->n_items; k++) {
                DcmItem *sub = new DcmItem();
                dwb_status st = dwb_attrs_to_item(at->items[k], sub, err);
                if (st != DWB_OK) {
                    delete sub;
                    delete sq;
                    return st;
                }
                sq->append(sub);
            }
            if (item->insert(sq, OFTrue).bad()) {
                delete sq;
                return tag_error(err, DWB_E_INTERNAL, key, "cannot insert sequence");
            }
            continue;
        }
        DcmElement *el = nullptr;
        if (DcmItem::newDicomElementWithVR(el, tag).bad() || !el)
            return tag_error(err, DWB_E_INTERNAL, key, "cannot create element");
        OFCondition c = EC_Normal;
        if (at->bulk && at->bulk_len > 0) {
            c = el->putUint8Array(at->bulk, (unsigned long)at->bulk_len);
        } else if (at->n_values > 0) {
            if (tag.getEVR() == EVR_AT) {
                for (size_t v = 0; v < at->n_values && c.good(); v++) {
                    unsigned g = 0, e = 0;
                    if (sscanf(at->values[v], "%4x%4x", &g, &e) != 2) {
                        delete el;
                        return tag_error(err, DWB_E_PARSE, key, "AT value is not 8 hex digits");
                    }
                    c = static_cast<DcmAttributeTag *>(el)->putTagVal(DcmTagKey((Uint16)g, (Uint16)e),
                                                                        (unsigned long)v);
                }
            } else {
                std::string joined;
                for (size_t v = 0; v < at->n_values; v++) {
                    if (v) joined += '\\';
                    joined += at->values[v];
                }
                c = el->putString(joined.c_str(), (Uint32)joined.size());
            }
        }
        if (c.bad()) {
            delete el;
            return tag_error(err, DWB_E_PARSE, key, c.text());
        }
        if (item->insert(el, OFTrue).bad()) {
            delete el;
            return tag_error(err, DWB_E_INTERNAL, key, "cannot insert element");
        }
    }
    return DWB_OK;
}

static bool all_ascii(DcmItem *item, int depth) {
    if (depth > kMaxDepth) return false;
    for (DcmObject *o = item->nextInContainer(nullptr); o; o = item->nextInContainer(o)) {
        DcmElement *el = static_cast<DcmElement *>(o);
        if (el->ident() == EVR_SQ) {
            DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
            for (DcmObject *k = sq->nextInContainer(nullptr); k; k = sq->nextInContainer(k))
                if (!all_ascii(static_cast<DcmItem *>(k), depth + 1)) return false;
            continue;
        }
        if (!el->isAffectedBySpecificCharacterSet()) continue;
        char *s = nullptr;
        if (el->getString(s).bad() || !s) continue;
        for (Uint32 k = 0; k < el->getLength(); k++)
            if ((unsigned char)s[k] >= 0x80) return false;
    }
    return true;
}

void dwb_dcm_answer_charset(DcmDataset *ds, const std::string &request_charset) {
    bool ascii = all_ascii(ds, 0);
    if (request_charset.empty()) {
        if (ascii)
            ds->findAndDeleteElement(DCM_SpecificCharacterSet);
        else
            ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
        return;
    }
    ds->putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    if (request_charset == "ISO_IR 192" || ascii) {
        if (ascii) ds->putAndInsertString(DCM_SpecificCharacterSet, request_charset.c_str());
        return;
    }
    // Try the request's character set on a copy; keep UTF-8 if any value does not fit.
    DcmDataset copy(*ds);
    if (copy.convertCharacterSet(OFString(request_charset.c_str()), 0).good()) *ds = copy;
}
