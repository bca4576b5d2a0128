// DCMTK adapter of de-identification: walks a data set, asks translate/dwb_deid.h what to do with each attribute
// (sequences recursively: a kept, dummied or UID-mapped sequence keeps its items, each de-identified in turn) and
// does it; then records what was done in (0012,0062), (0012,0063) and (0012,0064).
#include "dwb_deid.hh"

#include "dcmtk/dcmdata/dcdeftag.h"
#include "dcmtk/dcmdata/dcitem.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcsequen.h"
#include "dcmtk/dcmdata/dcvrda.h"

#include <vector>

namespace {

struct Ctx {
    const dwb_deid_profile *p;
    int day_offset; // Modified Dates: days every date of this patient moves back
    std::string why;
};

bool is_text_vr(DcmEVR vr) {
    switch (vr) {
    case EVR_OB: case EVR_OW: case EVR_OF: case EVR_OD: case EVR_OL: case EVR_OV: case EVR_UN: case EVR_US:
    case EVR_SS: case EVR_UL: case EVR_SL: case EVR_FL: case EVR_FD: case EVR_AT: case EVR_UV: case EVR_SV:
    case EVR_SQ:
        return false;
    default:
        return true;
    }
}

bool map_uids(Ctx &c, DcmElement *el) {
    if (el->ident() != EVR_UI) return el->clear().good(); // a U row on another VR: nothing to map, emptied
    std::string out;
    for (unsigned long k = 0; k < el->getVM(); k++) {
        OFString v;
        if (el->getOFString(v, k).bad()) continue;
        char uid[64];
        dwb_error e = {};
        if (dwb_deid_uid(c.p->secret, c.p->secret_len, v.c_str(), uid, sizeof uid, &e) != DWB_OK) {
            c.why = e.message;
            return false;
        }
        if (!out.empty()) out += '\\';
        out += uid;
    }
    return el->putString(out.c_str()).good();
}

bool shift_dates(Ctx &c, DcmElement *el) {
    if (el->ident() != EVR_DA && el->ident() != EVR_DT) return true; // times are kept (a whole-day shift)
    std::string out;
    for (unsigned long k = 0; k < el->getVM(); k++) {
        OFString v;
        if (el->getOFString(v, k).bad()) continue;
        std::vector<char> buf(v.size() + 1);
        dwb_error e = {};
        // A range or a value that is not a date cannot be shifted: it goes, rather than leaking a real date.
        if (dwb_deid_shift_date(v.c_str(), c.day_offset, buf.data(), buf.size(), &e) != DWB_OK)
            return el->clear().good();
        if (!out.empty()) out += '\\';
        out += buf.data();
    }
    return el->putString(out.c_str()).good();
}

bool walk(Ctx &c, DcmItem *item, int depth);

bool walk_items(Ctx &c, DcmSequenceOfItems *sq, int depth) {
    for (unsigned long i = 0; i < sq->card(); i++)
        if (!walk(c, sq->getItem(i), depth + 1)) return false;
    return true;
}

bool walk(Ctx &c, DcmItem *item, int depth) {
    if (depth > 64) {
        c.why = "sequences nested too deeply to de-identify";
        return false;
    }
    // Backwards, so that removing an element leaves the indices still to visit in place.
    for (unsigned long i = item->card(); i-- > 0;) {
        DcmElement *el = item->getElement(i);
        if (!el) continue;
        DcmTag tag = el->getTag();
        uint32_t t = ((uint32_t)tag.getGroup() << 16) | tag.getElement();
        if (tag.getElement() == 0x0000) { // group lengths: recomputed by the writer if at all
            delete item->remove(el);
            continue;
        }
        dwb_deid_do act = dwb_deid_decide(c.p, t);
        bool sq = el->ident() == EVR_SQ;
        bool ok = true;
        switch (act) {
        case DWB_DO_REMOVE:
            delete item->remove(el);
            break;
        case DWB_DO_EMPTY:
        case DWB_DO_CLEAN:
            ok = el->clear().good();
            break;
        case DWB_DO_DUMMY:
            if (sq) ok = walk_items(c, static_cast<DcmSequenceOfItems *>(el), depth);
            else if (el->ident() == EVR_UI) ok = map_uids(c, el);
            else if (is_text_vr(el->ident())) ok = el->putString(dwb_deid_dummy(DcmVR(el->ident()).getVRName())).good();
            else ok = el->clear().good();
            break;
        case DWB_DO_UID:
            ok = sq ? walk_items(c, static_cast<DcmSequenceOfItems *>(el), depth) : map_uids(c, el);
            break;
        case DWB_DO_SHIFT:
            ok = sq ? walk_items(c, static_cast<DcmSequenceOfItems *>(el), depth) : shift_dates(c, el);
            break;
        case DWB_DO_KEEP:
            if (sq) ok = walk_items(c, static_cast<DcmSequenceOfItems *>(el), depth);
            break;
        }
        if (!ok) {
            if (c.why.empty()) c.why = std::string("cannot de-identify ") + tag.toString().c_str();
            return false;
        }
    }
    return true;
}

struct Code {
    unsigned bit;
    const char *value, *meaning;
};
// CID 7050 De-identification Method, the codes of the profile and the supported options.
const Code kCodes[] = {{0, "113100", "Basic Application Confidentiality Profile"},
                       {DWB_DEID_OPT_RETAIN_PATIENT, "113108", "Retain Patient Characteristics Option"},
                       {DWB_DEID_OPT_RETAIN_DEVICE, "113109", "Retain Device Identity Option"},
                       {DWB_DEID_OPT_RETAIN_UIDS, "113110", "Retain UIDs Option"},
                       {DWB_DEID_OPT_CLEAN_DESC, "113105", "Clean Descriptors Option"},
                       {DWB_DEID_OPT_FULL_DATES, "113106",
                        "Retain Longitudinal Temporal Information Full Dates Option"},
                       {DWB_DEID_OPT_MODIFIED_DATES, "113107",
                        "Retain Longitudinal Temporal Information Modified Dates Option"}};

} // namespace

std::string dwb_deid_method_text(unsigned options) {
    std::string s = "DICOM PS3.15 E.1 Basic Application Level Confidentiality Profile";
    for (const Code &k : kCodes)
        if (k.bit && (options & k.bit)) {
            std::string m = k.meaning;
            if (m.size() > 64) m = m.substr(0, 64); // LO
            s += '\\';
            s += m;
        }
    return s;
}

bool dwb_deid_apply(DcmFileFormat &ff, const dwb_deid_profile *p, std::string &why) {
    DcmDataset *ds = ff.getDataset();
    Ctx c = {p, 0, {}};
    if (p->options & DWB_DEID_OPT_MODIFIED_DATES) {
        OFString pid;
        ds->findAndGetOFString(DCM_PatientID, pid);
        c.day_offset = dwb_deid_day_offset(p->secret, p->secret_len, pid.c_str());
    }
    if (!walk(c, ds, 0)) {
        why = c.why;
        return false;
    }
    OFCondition cond = ds->putAndInsertString(DCM_PatientIdentityRemoved, "YES");
    if (cond.good())
        cond = ds->putAndInsertString(DCM_DeidentificationMethod, dwb_deid_method_text(p->options).c_str());
    if (cond.good()) {
        ds->findAndDeleteElement(DCM_DeidentificationMethodCodeSequence);
        for (const Code &k : kCodes) {
            if (k.bit && !(p->options & k.bit)) continue;
            DcmItem *it = nullptr;
            cond = ds->findOrCreateSequenceItem(DCM_DeidentificationMethodCodeSequence, it, -2);
            if (cond.good()) cond = it->putAndInsertString(DCM_CodeValue, k.value);
            if (cond.good()) cond = it->putAndInsertString(DCM_CodingSchemeDesignator, "DCM");
            if (cond.good()) cond = it->putAndInsertString(DCM_CodeMeaning, k.meaning);
            if (cond.bad()) break;
        }
    }
    OFString sop;
    ds->findAndGetOFString(DCM_SOPInstanceUID, sop);
    if (cond.good()) cond = ff.getMetaInfo()->putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop.c_str());
    if (cond.bad()) {
        why = std::string("cannot record the de-identification: ") + cond.text();
        return false;
    }
    return true;
}
