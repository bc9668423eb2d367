-- Each rater's task labels in force, with the image's scanner from its sidecar:
-- vendor (first word of Manufacturer, upper case, so "GE" and "GE MEDICAL SYSTEMS"
-- group together) and field strength in tesla (values over 100 are read as gauss).
-- $1: BIDS suffix to keep, or NULL for every image.
SELECT l.image_id, l.rater, l.usable_label, l.quality_label, l.gado_label,
       CASE WHEN i.manufacturer IS NULL THEN NULL
            ELSE concat_ws(' ', upper(split_part(trim(i.manufacturer), ' ', 1)),
                           CASE WHEN i.field_strength IS NULL THEN NULL
                                WHEN i.field_strength > 100 THEN printf('%.1fT', i.field_strength / 10000)
                                ELSE printf('%.1fT', i.field_strength) END)
       END AS scanner
FROM rater_labels l
JOIN images i USING (image_id)
WHERE $1::VARCHAR IS NULL OR i.suffix = $1
ORDER BY l.image_id, l.rater
