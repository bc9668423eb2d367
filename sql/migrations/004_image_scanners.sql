-- Each image's scanner as reports group by it, from the sidecar: vendor (first word
-- of Manufacturer, upper case, so "GE" and "GE MEDICAL SYSTEMS" group together) and
-- field strength in tesla (values over 100 are read as gauss). NULL without a vendor.
CREATE VIEW image_scanners AS
SELECT image_id,
       CASE WHEN manufacturer IS NULL OR trim(manufacturer) = '' THEN NULL
            ELSE concat_ws(' ', upper(split_part(trim(manufacturer), ' ', 1)),
                           CASE WHEN field_strength IS NULL THEN NULL
                                WHEN field_strength > 100 THEN printf('%.1fT', field_strength / 10000)
                                ELSE printf('%.1fT', field_strength) END)
       END AS scanner
FROM images;
